//! [`Address`]: where one broker listens.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::Serialize;

/// A broker's host (name or IP address) and port, as a [`Resolver`](crate::Resolver)
/// hands them over.
///
/// ```
/// use courier_cluster::Address;
///
/// let a: Address = "broker-1.internal:1883".parse()?;
/// assert_eq!(a, Address::new("broker-1.internal", 1883));
/// let v6: Address = "[::1]:1884".parse()?;
/// assert_eq!(v6.to_string(), "[::1]:1884");
/// # Ok::<(), courier_cluster::AddressParseError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Address {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl Address {
    /// An address from a host and a port.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Address {
            host: host.into(),
            port,
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(addr: SocketAddr) -> Self {
        Address::new(addr.ip().to_string(), addr.port())
    }
}

impl From<(&str, u16)> for Address {
    fn from((host, port): (&str, u16)) -> Self {
        Address::new(host, port)
    }
}

/// Text that is not `host:port`, `[ipv6]:port` or `mqtt://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid broker address {input:?}: {reason}")]
pub struct AddressParseError {
    input: String,
    reason: &'static str,
}

impl AddressParseError {
    /// What is wrong with the text.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl FromStr for Address {
    type Err = AddressParseError;

    /// Parses `host:port`, `[ipv6]:port`, or an `mqtt://` / `tcp://` URL (port 1883
    /// when left out).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |reason| AddressParseError {
            input: s.to_owned(),
            reason,
        };
        let (rest, port_required) = match s.split_once("://") {
            Some(("mqtt" | "tcp", rest)) => (rest.split('/').next().unwrap_or_default(), false),
            Some(_) => return Err(fail("unsupported scheme: use mqtt:// or tcp://")),
            None => (s, true),
        };
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| fail("unclosed '['"))?;
            match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None if after.is_empty() => (host, None),
                None => return Err(fail("unexpected text after the IPv6 address")),
            }
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err(fail("empty host"));
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| fail("invalid port"))?,
            None if port_required => return Err(fail("missing port")),
            None => 1883,
        };
        if port == 0 {
            return Err(fail("port 0"));
        }
        Ok(Address::new(host, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays() {
        assert_eq!("a:1".parse(), Ok(Address::new("a", 1)));
        assert_eq!("[::1]:2".parse(), Ok(Address::new("::1", 2)));
        assert_eq!("mqtt://b".parse(), Ok(Address::new("b", 1883)));
        assert_eq!("tcp://c:9/x".parse(), Ok(Address::new("c", 9)));
        assert!("b".parse::<Address>().is_err());
        assert!("b:x".parse::<Address>().is_err());
        assert!(":1".parse::<Address>().is_err());
        assert!("b:0".parse::<Address>().is_err());
        assert!("http://b".parse::<Address>().is_err());
        assert_eq!(Address::new("::1", 3).to_string(), "[::1]:3");
        assert_eq!(Address::new("h", 3).to_string(), "h:3");
        let sa: SocketAddr = "127.0.0.1:5".parse().unwrap();
        assert_eq!(Address::from(sa), Address::new("127.0.0.1", 5));
    }
}
