//! What a user may tell a connection to do, said the same way by every
//! console and API: the checks on the arguments, before any driver acts.

use kinetid_wsdump::wire::codes::CloseCode;

/// Parse `CODE [REASON]` for a Close the console sends.
pub fn close_args(rest: &str) -> Result<(u16, String), String> {
    let mut p = rest.splitn(2, ' ');
    let code = match p.next().filter(|c| !c.is_empty()) {
        None => 1000,
        Some(c) => match c.parse::<u16>() {
            Ok(n) if CloseCode(n).is_allowed() => n,
            _ => {
                return Err(format!(
                    "close code {c:?} cannot be sent: a Close frame carries 1000-1003, 1007-1014 or 3000-4999 (RFC 6455 7.4)"
                ))
            }
        },
    };
    let reason = p.next().unwrap_or("closed from the console").to_string();
    if reason.len() > 123 {
        return Err(format!(
            "close reason is {} bytes; a control frame leaves room for 123 (RFC 6455 5.5)",
            reason.len()
        ));
    }
    Ok((code, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_are_checked() {
        assert_eq!(close_args(""), Ok((1000, "closed from the console".into())));
        assert_eq!(close_args("4001 bye now"), Ok((4001, "bye now".into())));
        assert!(close_args("99999").is_err());
        assert!(close_args("1005").is_err());
        assert!(close_args("abc").is_err());
        assert!(close_args(&format!("1000 {}", "x".repeat(124))).is_err());
    }
}
