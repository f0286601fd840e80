//! Reading the `Cookie` request headers, with the `cookie` crate: one parser for
//! session shards and flow cookies.

/// Every `name=value` pair of the request's `Cookie` headers, in order; pieces that
/// are not cookies are skipped.
pub fn pairs<'a>(
    headers: impl IntoIterator<Item = &'a str>,
) -> impl Iterator<Item = (&'a str, &'a str)> {
    headers
        .into_iter()
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .filter_map(|c| Some((c.name_raw()?, c.value_raw()?)))
}

/// The first value of the cookie called `name`.
pub fn find<'a>(headers: impl IntoIterator<Item = &'a str>, name: &str) -> Option<&'a str> {
    pairs(headers).find_map(|(k, v)| (k == name).then_some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_read_from_every_header() {
        let headers = ["a=1; b=2", "c=3;d", " e = 5 "];
        let all: Vec<_> = pairs(headers).collect();
        assert_eq!(all, [("a", "1"), ("b", "2"), ("c", "3"), ("e", "5")]);
        assert_eq!(find(headers, "b"), Some("2"));
        assert_eq!(find(["x=1; x=2"], "x"), Some("1"), "the first one counts");
        assert_eq!(find(headers, "z"), None);
    }
}
