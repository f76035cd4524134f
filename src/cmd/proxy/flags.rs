//! The proxy's flags: the upstream URL, the faults and the cut.

use super::*;

/// Read `ws://HOST[:PORT][/PATH]`. The path is the device's own: only where
/// to connect comes from the URL.
pub fn parse_upstream(url: &str) -> Result<Upstream, String> {
    let (tls, rest) = match (url.strip_prefix("ws://"), url.strip_prefix("wss://")) {
        (Some(r), _) => (false, r),
        (_, Some(r)) => (true, r),
        _ => {
            return Err(format!(
                "{url:?}: the upstream must be a ws:// or wss:// URL"
            ))
        }
    };
    let hostport = rest.split(['/', '?']).next().unwrap_or("");
    if hostport.is_empty() || hostport.contains('@') {
        return Err(format!("{url:?}: no host"));
    }
    let port_ok = |p: &str| p.parse::<u16>().is_ok();
    let has_port = if hostport.starts_with('[') {
        hostport.rsplit_once("]:").is_some_and(|(_, p)| port_ok(p))
    } else {
        hostport.rsplit_once(':').is_some_and(|(_, p)| port_ok(p))
    };
    let addr = if has_port {
        hostport.to_string()
    } else {
        format!("{hostport}:{}", if tls { 443 } else { 80 })
    };
    Ok(Upstream {
        addr,
        host: hostport.to_string(),
        tls,
    })
}

/// Read `--cut-after 30s` or `--cut-after 20f` (frames).
pub fn parse_cut(s: &str) -> Result<Cut, String> {
    if let Some(n) = s.strip_suffix('f') {
        return n
            .parse()
            .map(Cut::Frames)
            .map_err(|_| format!("{s:?}: a number of frames is written like 20f"));
    }
    crate::cli::parse_duration(s).map(Cut::After)
}

/// Apply `[up:|down:]VALUE` flags: `set` on the direction named, or both.
pub(super) fn each<T: Copy>(
    vals: &[String],
    flag: &str,
    parse: impl Fn(&str) -> Result<T, String>,
    faults: &mut (Faults, Faults),
    set: impl Fn(&mut Faults, T),
) -> Result<(), AppError> {
    for v in vals {
        let (u, d, x) = match (v.strip_prefix("up:"), v.strip_prefix("down:")) {
            (Some(r), _) => (true, false, r),
            (_, Some(r)) => (false, true, r),
            _ => (true, true, v.as_str()),
        };
        let t = parse(x).map_err(|e| AppError::Usage(format!("{flag}: {e}")))?;
        if u {
            set(&mut faults.0, t);
        }
        if d {
            set(&mut faults.1, t);
        }
    }
    Ok(())
}

/// Apply `up|down|both` flags.
pub(super) fn sides(
    vals: &[String],
    flag: &str,
    faults: &mut (Faults, Faults),
    set: impl Fn(&mut Faults),
) -> Result<(), AppError> {
    for v in vals {
        let (u, d) = match v.as_str() {
            "up" => (true, false),
            "down" => (false, true),
            "both" => (true, true),
            other => {
                return Err(AppError::Usage(format!(
                    "{flag}: {other:?}: up, down or both"
                )))
            }
        };
        if u {
            set(&mut faults.0);
        }
        if d {
            set(&mut faults.1);
        }
    }
    Ok(())
}

/// The faults of both directions (device to upstream, upstream to device).
pub fn faults(a: &ProxyArgs) -> Result<(Faults, Faults), AppError> {
    let mut f = (Faults::default(), Faults::default());
    let time = |x: &str| crate::cli::parse_duration(x);
    each(&a.delay, "--delay", time, &mut f, |f, t| f.delay = t)?;
    each(&a.jitter, "--jitter", time, &mut f, |f, t| f.jitter = t)?;
    let rate = |x: &str| match crate::cli::parse_size(x.trim_end_matches("/s"))? {
        0 => Err("must be above 0".to_string()),
        r => Ok(r),
    };
    each(&a.bandwidth, "--bandwidth", rate, &mut f, |f, r| {
        f.bandwidth = Some(r)
    })?;
    sides(&a.drop_pings, "--drop-pings", &mut f, |f| {
        f.drop_pings = true
    })?;
    sides(&a.stall, "--stall", &mut f, |f| f.stall = true)?;
    Ok(f)
}
