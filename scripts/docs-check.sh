#!/usr/bin/env bash
# Render pages of the built manual in headless Chromium (Debian's package) and
# check that every <img> loaded (complete, naturalWidth > 0). The book is
# served on a loopback port so that a harness page can read each page's DOM
# from a same-origin iframe; chromium --dump-dom prints the verdict.
# usage: scripts/docs-check.sh [BOOK_DIR] [PAGE ...]
set -euo pipefail
cd "$(dirname "$0")/.."
book=${1:-target/book}
shift || true
pages=("$@")
[ ${#pages[@]} -gt 0 ] || pages=(index.html recipes/order-confirmation.html)
[ -f "$book/index.html" ] || { echo "docs-check: $book/index.html missing: run make docs first" >&2; exit 2; }

chromium=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$chromium" ]; then
  echo "docs-check: installing chromium (apt)" >&2
  mkdir -p target
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >target/apt-chromium.log 2>&1 ||
    { tail -20 target/apt-chromium.log >&2; exit 2; }
  chromium=$(command -v chromium)
fi

out=target/docs-check
mkdir -p "$out"
harness=__docs_check.html
cat >"$book/$harness" <<'HTML'
<!doctype html><meta charset="utf-8"><title>docs-check</title>
<pre id="result">pending</pre>
<iframe id="f" style="width:1280px;height:900px"></iframe>
<script>
const page = new URLSearchParams(location.search).get("page");
const f = document.getElementById("f");
f.onload = () => {
  const d = f.contentDocument;
  const imgs = [...d.images];
  const wait = imgs.map(i => i.complete ? Promise.resolve() : new Promise(r => { i.onload = i.onerror = r; }));
  Promise.all(wait).then(() => {
    const bad = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute("src"));
    const h1 = d.querySelector("main h1") || d.querySelector("h1");
    document.getElementById("result").textContent =
      "DOCS-CHECK page=" + page + " title=" + JSON.stringify(h1 ? h1.textContent.trim() : "") +
      " images=" + imgs.length + " broken=" + bad.length + (bad.length ? " " + JSON.stringify(bad) : "") +
      " sizes=" + JSON.stringify(imgs.map(i => i.getAttribute("src") + ":" + i.naturalWidth + "x" + i.naturalHeight));
  });
};
f.src = page;
</script>
HTML

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -m http.server "$port" --bind 127.0.0.1 --directory "$book" >"$out/http.log" 2>&1 &
server=$!
profile=$(mktemp -d)
cleanup() { kill "$server" 2>/dev/null || true; rm -rf "$profile"; rm -f "$book/$harness"; }
trap cleanup EXIT
for _ in $(seq 1 50); do curl -fsS "http://127.0.0.1:$port/index.html" >/dev/null 2>&1 && break; sleep 0.1; done

flags=(--headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking
  --disable-component-update --disable-sync --disable-quic --user-data-dir="$profile"
  --run-all-compositor-stages-before-draw --virtual-time-budget=10000 --window-size=1280,900)

failed=0
for page in "${pages[@]}"; do
  [ -f "$book/$page" ] || { echo "docs-check: $page: not in the built book"; failed=1; continue; }
  line=$("$chromium" "${flags[@]}" --dump-dom "http://127.0.0.1:$port/$harness?page=$page" 2>>"$out/chromium.log" |
    grep -o '<pre id="result">DOCS-CHECK[^<]*' | sed -e 's/^<pre id="result">//' -e 's/&quot;/"/g' || true)
  shot="$out/$(echo "$page" | tr '/' '_' | sed 's/\.html$//').png"
  "$chromium" "${flags[@]}" --screenshot="$shot" "http://127.0.0.1:$port/$page" >>"$out/chromium.log" 2>&1 || true
  if [ -z "$line" ]; then
    echo "docs-check: $page: no verdict from chromium (see $out/chromium.log)"; failed=1
  elif ! grep -q ' broken=0 ' <<<"$line"; then
    echo "FAIL $line"; failed=1
  elif [ "$page" = index.html ] && grep -q ' images=0 ' <<<"$line"; then
    echo "FAIL $line (the index page must show the architecture picture)"; failed=1
  else
    echo "ok   $line (screenshot $shot)"
  fi
done
exit $failed
