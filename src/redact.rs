//! Masks for personal data in logs (SPEC §9): `j***@example.com`, `+4477******23`.

/// Keeps the first character of the local part and the domain.
pub fn email(raw: &str) -> String {
    let raw = raw.trim();
    match raw.rsplit_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => mask_middle(raw, 1, 0),
    }
}

/// Keeps the first five and the last two characters of the compacted number.
pub fn phone(raw: &str) -> String {
    let compact: String = raw.chars().filter(|c| !c.is_whitespace() && !matches!(c, '-' | '(' | ')' | '.')).collect();
    mask_middle(&compact, 5, 2)
}

fn mask_middle(text: &str, keep_start: usize, keep_end: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    // At least five characters stay hidden; short values are hidden whole.
    let keep_end = if chars.len() >= 8 { keep_end } else { 0 };
    let keep_start = keep_start.min(chars.len().saturating_sub(keep_end + 5));
    let hidden = chars.len() - keep_start - keep_end;
    let mut out: String = chars[..keep_start].iter().collect();
    out.push_str(&"*".repeat(hidden.max(3)));
    out.extend(&chars[chars.len() - keep_end..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_follow_the_spec() {
        assert_eq!(email("jane@example.com"), "j***@example.com");
        assert_eq!(phone("+447700900123"), "+4477******23");
        assert_eq!(phone("07700 900123"), "0770*****23");
        assert!(!email("not-an-address").contains("an-address"));
        assert_eq!(phone("12"), "***");
    }
}

/// Masks anything that looks like an email address or a phone number inside a
/// free-text message (Dataverse error messages may echo values).
pub fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut token = String::new();
    let flush = |token: &mut String, out: &mut String| {
        let digits = token.chars().filter(char::is_ascii_digit).count();
        if token.contains('@') && token.rsplit('@').next().is_some_and(|d| d.contains('.')) {
            out.push_str(&email(token));
        } else if digits >= 7 && token.chars().all(|c| c.is_ascii_digit() || "+-().".contains(c)) {
            out.push_str(&phone(token));
        } else {
            out.push_str(token);
        }
        token.clear();
    };
    for c in text.chars() {
        if c.is_whitespace() || "'\"<>,;[]{}".contains(c) {
            flush(&mut token, &mut out);
            out.push(c);
        } else {
            token.push(c);
        }
    }
    flush(&mut token, &mut out);
    out
}

#[cfg(test)]
mod scrub_tests {
    #[test]
    fn scrub_masks_contact_points_in_messages() {
        let text = "The value 'Jane@Example.com' or +447700900123 is bad for msdynmkt_orderid 42";
        assert_eq!(super::scrub(text), "The value 'J***@Example.com' or +4477******23 is bad for msdynmkt_orderid 42");
    }
}
