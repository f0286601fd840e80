//! Each Gateway's own address, from the range `--gateway-addresses` gives: the one its
//! `spec.addresses` asks for, else the one its status already shows (so an address
//! does not move while its Gateway lives), else one picked by a hash of its name. Pure:
//! every replica works out the same addresses from the same objects, oldest Gateway
//! first, so an older Gateway keeps an address a newer one also wants.

use std::collections::HashSet;
use std::net::IpAddr;

use gateway_api::gateways::Gateway;

/// Why a Gateway has no address of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoAddress {
    /// `spec.addresses` names a kind of address Portcullis does not give (a host name,
    /// another type): the Gateway is not accepted (`UnsupportedAddress`).
    Unsupported(String),
    /// `spec.addresses` asks for IP addresses that cannot be given (outside the range,
    /// taken, more than one): not programmed (`AddressNotUsable`).
    Refused(String),
    /// Every address of the range is taken (`AddressNotAssigned`).
    Exhausted,
}

impl NoAddress {
    pub fn message(&self, pool: &ipnet::IpNet) -> String {
        match self {
            NoAddress::Unsupported(why) | NoAddress::Refused(why) => why.clone(),
            NoAddress::Exhausted => format!(
                "every address of --gateway-addresses {pool} is taken by an older Gateway; widen the range"
            ),
        }
    }
}

/// Hands out addresses of `pool`, oldest Gateway first.
pub struct Assigner {
    pool: ipnet::IpNet,
    taken: HashSet<IpAddr>,
}

impl Assigner {
    pub fn new(pool: ipnet::IpNet) -> Self {
        Self {
            pool,
            taken: HashSet::new(),
        }
    }

    pub fn pool(&self) -> &ipnet::IpNet {
        &self.pool
    }

    /// The address of `gateway` (call in age order).
    pub fn assign(&mut self, gateway: &Gateway, key: &str) -> Result<IpAddr, NoAddress> {
        // An IPAddress entry without a value asks for any address (GatewayAddressEmpty).
        let any = |a: &gateway_api::gateways::GatewayAddresses| {
            a.value.as_deref().is_none_or(str::is_empty)
                && a.r#type.as_deref().is_none_or(|t| t == "IPAddress")
        };
        let requested = gateway
            .spec
            .addresses
            .as_ref()
            .filter(|a| !a.iter().all(any));
        if let Some(requested) = requested {
            let ip = self.requested(requested)?;
            self.taken.insert(ip);
            return Ok(ip);
        }
        let shown = gateway
            .status
            .iter()
            .flat_map(|s| s.addresses.iter().flatten())
            .filter_map(|a| a.value.parse::<IpAddr>().ok())
            .find(|ip| self.usable(*ip) && !self.taken.contains(ip));
        let ip = match shown {
            Some(ip) => ip,
            None => self.hashed(key).ok_or(NoAddress::Exhausted)?,
        };
        self.taken.insert(ip);
        Ok(ip)
    }

    /// The one IP address `spec.addresses` names, when it is free and in the range.
    fn requested(
        &self,
        requested: &[gateway_api::gateways::GatewayAddresses],
    ) -> Result<IpAddr, NoAddress> {
        let mut ips = Vec::new();
        for one in requested {
            let kind = one.r#type.as_deref().unwrap_or("IPAddress");
            let value = one.value.as_deref().unwrap_or_default();
            match (kind, value.parse::<IpAddr>()) {
                ("IPAddress", Ok(ip)) => ips.push(ip),
                _ => {
                    return Err(NoAddress::Unsupported(format!(
                        "spec.addresses asks for {kind} {value:?}; Portcullis gives IP addresses of --gateway-addresses {}",
                        self.pool
                    )));
                }
            }
        }
        let refuse = |why: String| Err(NoAddress::Refused(why));
        if let Some(ip) = ips.iter().find(|ip| !self.usable(**ip)) {
            return refuse(format!(
                "spec.addresses asks for {ip}, outside --gateway-addresses {}",
                self.pool
            ));
        }
        if let Some(ip) = ips.iter().find(|ip| self.taken.contains(ip)) {
            return refuse(format!("{ip} is taken by an older Gateway"));
        }
        match ips[..] {
            [ip] => Ok(ip),
            _ => refuse(
                "spec.addresses names more than one address; Portcullis gives a Gateway one".into(),
            ),
        }
    }

    /// In the range, and not its network or broadcast address.
    fn usable(&self, ip: IpAddr) -> bool {
        self.pool.contains(&ip) && self.hosts() > 0 && {
            let offset = offset_of(&self.pool, ip);
            !self.reserves_ends() || (offset != 0 && offset != self.size() - 1)
        }
    }

    /// An IPv4 range of more than two addresses keeps its first and last apart.
    fn reserves_ends(&self) -> bool {
        matches!(self.pool, ipnet::IpNet::V4(n) if n.prefix_len() < 31)
    }

    /// How many addresses the range has (capped: a hash picks among at most 2^64).
    fn size(&self) -> u128 {
        let bits = u32::from(self.pool.max_prefix_len() - self.pool.prefix_len());
        1u128.checked_shl(bits.min(64)).unwrap_or(u128::MAX)
    }

    fn hosts(&self) -> u128 {
        if self.reserves_ends() {
            self.size().saturating_sub(2)
        } else {
            self.size()
        }
    }

    /// The free address a hash of `key` points at, or the next free one after it.
    fn hashed(&self, key: &str) -> Option<IpAddr> {
        let hosts = self.hosts();
        if hosts == 0 || self.taken.len() as u128 >= hosts {
            return None;
        }
        let first = u128::from(fnv1a(key)) % hosts;
        let skip = u128::from(self.reserves_ends());
        // Bounded by the Gateways already placed: each taken address moves it one on.
        (0..=self.taken.len() as u128)
            .map(|step| nth(&self.pool, skip + (first + step) % hosts))
            .find(|ip| !self.taken.contains(ip))
    }
}

/// A stable hash (FNV-1a), the same on every replica and release.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn offset_of(pool: &ipnet::IpNet, ip: IpAddr) -> u128 {
    match (pool.network(), ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => u128::from(u32::from(i) - u32::from(n)),
        (IpAddr::V6(n), IpAddr::V6(i)) => u128::from(i) - u128::from(n),
        _ => u128::MAX,
    }
}

fn nth(pool: &ipnet::IpNet, offset: u128) -> IpAddr {
    match pool.network() {
        IpAddr::V4(n) => IpAddr::V4((u32::from(n) + offset as u32).into()),
        IpAddr::V6(n) => IpAddr::V6((u128::from(n) + offset).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(extra: serde_json::Value) -> Gateway {
        let mut g = serde_json::json!({
            "metadata": {"name": "g", "namespace": "x"},
            "spec": {"gatewayClassName": "c", "listeners": []},
        });
        if let Some(addresses) = extra.get("addresses") {
            g["spec"]["addresses"] = addresses.clone();
        }
        if let Some(status) = extra.get("status") {
            g["status"] = status.clone();
        }
        serde_json::from_value(g).unwrap()
    }

    fn plain() -> Gateway {
        gateway(serde_json::json!({}))
    }

    #[test]
    fn addresses_are_stable_distinct_and_inside_the_range() {
        let pool: ipnet::IpNet = "127.10.0.0/24".parse().unwrap();
        let mut first = Assigner::new(pool);
        let a = first.assign(&plain(), "x/a").unwrap();
        let b = first.assign(&plain(), "x/b").unwrap();
        assert_ne!(a, b);
        for ip in [a, b] {
            assert!(pool.contains(&ip));
            assert_ne!(ip, pool.network());
            assert_ne!(ip, pool.broadcast());
        }
        let mut again = Assigner::new(pool);
        assert_eq!(again.assign(&plain(), "x/a").unwrap(), a);
    }

    #[test]
    fn the_address_a_status_shows_is_kept_and_a_requested_one_given() {
        let pool: ipnet::IpNet = "127.10.0.0/24".parse().unwrap();
        let shown = gateway(serde_json::json!({
            "status": {"addresses": [{"type": "IPAddress", "value": "127.10.0.77"}]}
        }));
        let mut assigner = Assigner::new(pool);
        assert_eq!(
            assigner.assign(&shown, "x/a").unwrap(),
            "127.10.0.77".parse::<IpAddr>().unwrap()
        );
        let asks = |value: &str| {
            gateway(serde_json::json!({"addresses": [{"type": "IPAddress", "value": value}]}))
        };
        // Taken by the older Gateway or outside the range: refused; not an IP address:
        // unsupported.
        for value in ["127.10.0.77", "10.0.0.1"] {
            assert!(matches!(
                assigner.assign(&asks(value), "x/b"),
                Err(NoAddress::Refused(_))
            ));
        }
        assert!(matches!(
            assigner.assign(&asks("gw.example.com"), "x/b"),
            Err(NoAddress::Unsupported(_))
        ));
        let two = gateway(serde_json::json!({"addresses": [
            {"type": "IPAddress", "value": "127.10.0.9"},
            {"type": "IPAddress", "value": "127.10.0.10"},
        ]}));
        assert!(matches!(
            assigner.assign(&two, "x/b"),
            Err(NoAddress::Refused(_))
        ));
        assert_eq!(
            assigner.assign(&asks("127.10.0.9"), "x/b").unwrap(),
            "127.10.0.9".parse::<IpAddr>().unwrap()
        );
        // An IPAddress without a value: any address of the range.
        let any = gateway(serde_json::json!({"addresses": [{"type": "IPAddress"}]}));
        let given = assigner.assign(&any, "x/c").unwrap();
        assert!(pool.contains(&given));
    }

    #[test]
    fn a_full_range_gives_no_address() {
        let pool: ipnet::IpNet = "127.10.0.0/30".parse().unwrap();
        let mut assigner = Assigner::new(pool);
        assert!(assigner.assign(&plain(), "x/a").is_ok());
        assert!(assigner.assign(&plain(), "x/b").is_ok());
        assert_eq!(assigner.assign(&plain(), "x/c"), Err(NoAddress::Exhausted));
    }
}
