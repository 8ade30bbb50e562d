//! d365-sandbox: Secrets Manager, Entra, Dataverse (triggers, the `customapis` query,
//! contacts and leads) and SQS on one port, on loopback unless `--bind` says
//! otherwise (`sam local`: an address the function's container reaches).
//!
//! ```text
//! d365-sandbox [--config sandbox/config.json] [--bind 127.0.0.1] [--port 8765] [--seed N]
//!              [--latency-ms N] [--jitter-ms N] [--throttle-rate F] [--retry-after S]
//!              [--error-rate F] [--unavailable-rate F] [--drop-rate F]
//!              [--max-concurrency N] [--dop-hint N] [--token-lifetime S]
//! ```
//! Admin: GET /_sandbox/signals, GET /_sandbox/stats, POST /_sandbox/reset,
//! GET|PUT /_sandbox/faults, PUT /_sandbox/secrets/{name}, PUT /_sandbox/apps,
//! PUT /_sandbox/triggers; per environment (SPEC §23.4): GET /_sandbox/environments,
//! GET /_sandbox/environments/{host}/signals|stats, GET|PUT|DELETE
//! /_sandbox/environments/{host}/faults, GET|PUT /_sandbox/environments/{host}/rows/{set}.
//!
//! Several Dataverse environments: `/{org_url_host}/api/data/v9.2/…` is that
//! environment's (the relay's `D365_DATAVERSE_BASE_URL=http://…/{org_url_host}`).

use d365_sandbox::{Sandbox, SandboxConfig};

const USAGE: &str = "usage: d365-sandbox [--config FILE] [--bind ADDR] [--port N] [--seed N] [--latency-ms N] [--jitter-ms N] \
[--throttle-rate F] [--retry-after S] [--error-rate F] [--unavailable-rate F] [--drop-rate F] \
[--max-concurrency N] [--dop-hint N] [--token-lifetime S]";

fn main() {
    if let Err(message) = run() {
        eprintln!("d365-sandbox: {message}\n{USAGE}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut config_path = "sandbox/config.json".to_string();
    let mut bind = std::net::IpAddr::from([127, 0, 0, 1]);
    let mut port: u16 = 8765;
    let mut overrides: Vec<(String, String)> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let flag = args[i].as_str();
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            return Ok(());
        }
        let value = args.get(i + 1).ok_or_else(|| format!("{flag} needs a value"))?.clone();
        match flag {
            "--config" => config_path = value,
            "--bind" => bind = value.parse().map_err(|_| format!("--bind: '{value}' is not an IP address"))?,
            "--port" => port = value.parse().map_err(|_| format!("--port: '{value}' is not a port"))?,
            _ => overrides.push((flag.to_string(), value)),
        }
        i += 2;
    }
    let text = std::fs::read_to_string(&config_path).map_err(|e| format!("cannot read {config_path}: {e}"))?;
    let mut config: SandboxConfig = serde_json::from_str(&text).map_err(|e| format!("{config_path}: {e}"))?;
    for (flag, value) in overrides {
        let number = || value.parse::<f64>().map_err(|_| format!("{flag}: '{value}' is not a number"));
        let f = &mut config.faults;
        match flag.as_str() {
            "--seed" => config.seed = number()? as u64,
            "--latency-ms" => f.latency_ms = number()? as u64,
            "--jitter-ms" => f.latency_jitter_ms = number()? as u64,
            "--throttle-rate" => f.throttle_rate = number()?,
            "--retry-after" => f.retry_after_secs = Some(number()? as u64),
            "--error-rate" => f.error_rate = number()?,
            "--unavailable-rate" => f.unavailable_rate = number()?,
            "--drop-rate" => f.drop_rate = number()?,
            "--max-concurrency" => f.max_concurrency = Some(number()? as usize),
            "--dop-hint" => f.dop_hint = Some(number()? as usize),
            "--token-lifetime" => config.token_lifetime_secs = Some(number()? as u64),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let addr = std::net::SocketAddr::new(bind, port);
        let sandbox = Sandbox::start_on(config, addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        println!("d365-sandbox listening on {}", sandbox.url());
        println!("  relay settings: AWS_ENDPOINT_URL_SECRETS_MANAGER={0} D365_AUTHORITY_HOST={0} D365_DATAVERSE_BASE_URL={0}", sandbox.url());
        println!("  several environments: D365_DATAVERSE_BASE_URL={}/{{org_url_host}}", sandbox.url());
        println!("  what Dynamics received: curl -s {}/_sandbox/signals", sandbox.url());
        tokio::signal::ctrl_c().await.map_err(|e| e.to_string())?;
        Ok(())
    })
}
