//! Header rewriting between client and replica.

use std::net::IpAddr;

use hyper::header::{CONNECTION, HOST, HeaderMap, HeaderName, HeaderValue, UPGRADE};
use hyper::{Request, Uri, Version};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Removes the headers that describe one connection (RFC 9110 7.6.1), including those the
/// `Connection` header names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The names that describe one connection, removed on both paths (with those `Connection` names).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whether a raw header name is one of [`HOP_BY_HOP`].
pub(crate) fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// What a raw `Connection` header value says: whether it has `close` and `upgrade`; the other
/// header names it lists (apart from [`HOP_BY_HOP`]) are added to `listed`.
pub(crate) fn connection_tokens<'a>(value: &'a [u8], listed: &mut Vec<&'a str>) -> (bool, bool) {
    let (mut close, mut upgrade) = (false, false);
    for token in visible(value).unwrap_or("").split(',').map(str::trim) {
        if token.eq_ignore_ascii_case("close") {
            close = true;
        } else if token.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        } else if !token.is_empty() && !is_hop_by_hop(token) {
            listed.push(token);
        }
    }
    (close, upgrade)
}

/// A raw header value as text when it is what `HeaderValue::to_str` accepts (visible ASCII,
/// spaces and tabs), so both paths read the same headers the same way.
pub(crate) fn visible(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}

/// The protocol an HTTP/1.1 request asks to upgrade to (`Connection: upgrade` + `Upgrade`).
pub(crate) fn upgrade_protocol<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let asks = req.headers().get_all(CONNECTION).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        })
    });
    if asks {
        req.headers().get(UPGRADE).cloned()
    } else {
        None
    }
}

/// The `Host` header (HTTP/1.1) or the `:authority` (HTTP/2).
pub(crate) fn request_host<B>(req: &Request<B>) -> Option<&str> {
    req.headers()
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
}

/// A host without its port (`[::1]:80` → `[::1]`).
pub(crate) fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// The `X-Forwarded-For` value of a client connection that sent none: its address, formatted
/// once per connection rather than per request.
pub(crate) fn client_address(client_ip: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&client_ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Turns a client's request into the one the replica gets: hop-by-hop headers out, the
/// upgrade (if any) asked again, `X-Forwarded-*` set, origin-form URI, HTTP/1.1. `client` is
/// [`client_address`] of the connection's peer.
pub(crate) fn prepare_request<B>(
    req: &mut Request<B>,
    client: &HeaderValue,
    upgrade: Option<HeaderValue>,
) {
    let authority = req.uri().authority().cloned();
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    if let Some(protocol) = upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, protocol);
    }
    // HTTP/2 requests carry the host as `:authority`; HTTP/1.1 replicas need `Host`.
    if !headers.contains_key(HOST)
        && let Some(a) = &authority
        && let Ok(v) = HeaderValue::from_str(a.as_str())
    {
        headers.insert(HOST, v);
    }
    if headers.contains_key(&X_FORWARDED_FOR) {
        // Only a request that already went through proxies pays for building the chain.
        let mut chain = Vec::new();
        for v in headers.get_all(&X_FORWARDED_FOR) {
            if v.to_str().is_err() {
                continue;
            }
            chain.extend_from_slice(v.as_bytes());
            chain.extend_from_slice(b", ");
        }
        chain.extend_from_slice(client.as_bytes());
        if let Ok(v) = HeaderValue::from_bytes(&chain) {
            headers.insert(X_FORWARDED_FOR.clone(), v);
        }
    } else {
        headers.insert(X_FORWARDED_FOR.clone(), client.clone());
    }
    // The proxy serves plain HTTP; a TLS terminator in front sets its own headers upstream of us.
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    if let Some(host) = headers.get(HOST).cloned() {
        headers.insert(X_FORWARDED_HOST.clone(), host);
    }
    if req.uri().scheme().is_some() || req.uri().authority().is_some() {
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        *req.uri_mut() = path.parse().unwrap_or_else(|_| Uri::from_static("/"));
    }
    *req.version_mut() = Version::HTTP_11;
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::TRANSFER_ENCODING;

    #[test]
    fn ports_are_cut_from_host_names() {
        assert_eq!(host_name("a.test:8080"), "a.test");
        assert_eq!(host_name("a.test"), "a.test");
        assert_eq!(host_name("[::1]:80"), "[::1]");
        assert_eq!(host_name("[::1]"), "[::1]");
    }

    #[test]
    fn headers_named_by_connection_are_removed_with_the_standard_ones() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, X-Hop"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["x-kept"]);
    }

    #[test]
    fn an_http2_request_becomes_origin_form_with_host_and_forwarded_headers() {
        let mut req = Request::builder()
            .version(Version::HTTP_2)
            .uri("http://app.test:8080/a?b=1")
            .header("x-forwarded-for", "10.0.0.1")
            .body(())
            .unwrap();
        let client = client_address("127.0.0.1".parse().unwrap());
        prepare_request(&mut req, &client, None);
        assert_eq!(req.uri().to_string(), "/a?b=1");
        assert_eq!(req.version(), Version::HTTP_11);
        let h = req.headers();
        assert_eq!(h[HOST], "app.test:8080");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "app.test:8080");
    }
}
