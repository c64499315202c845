//! Flag values that need more than their type's own parser: a duration that must not be zero,
//! an address that may be `off`.

use std::net::SocketAddr;

use crate::primitives::HumanDuration;

/// A duration that must not be zero: a refresh every 0 s would spin (tokio's interval panics on
/// it, which would leave certificate or CA rotation silently dead), so it is refused at start.
pub fn positive_duration(text: &str) -> Result<HumanDuration, String> {
    let d = HumanDuration::parse(text)?;
    if d.0.is_zero() {
        return Err(format!(
            "{text:?} must be greater than zero (it is how often something is re-read)"
        ));
    }
    Ok(d)
}

/// A listen address, or `off` (`None`).
#[derive(Debug, Clone, Copy)]
pub struct OptionalAddr(pub Option<SocketAddr>);

/// `off`, or a socket address.
pub fn parse_optional_addr(text: &str) -> Result<OptionalAddr, String> {
    if text == "off" {
        return Ok(OptionalAddr(None));
    }
    text.parse()
        .map(|a| OptionalAddr(Some(a)))
        .map_err(|e| format!("{text:?}: {e} (an address such as 0.0.0.0:9090, or off)"))
}
