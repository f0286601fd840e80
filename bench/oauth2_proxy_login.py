"""Logs in through oauth2-proxy and the test provider (tests/idp/server.mjs) the way a
browser would, and prints the Cookie header value of the session oauth2-proxy set.
Usage: python3 bench/oauth2_proxy_login.py PROXY_ORIGIN USER"""

import html
import re
import sys
import urllib.error
import urllib.parse
import urllib.request


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


opener = urllib.request.build_opener(NoRedirect)
jar = {}


def send(url, form=None):
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    req = urllib.request.Request(url, data=data)
    if jar:
        req.add_header("Cookie", "; ".join(f"{k}={v}" for k, v in jar.items()))
    try:
        resp = opener.open(req)
    except urllib.error.HTTPError as e:
        resp = e
    for header in resp.headers.get_all("Set-Cookie") or []:
        name, _, rest = header.partition("=")
        value = rest.split(";", 1)[0]
        if "max-age=0" in header.lower() or "expires=thu, 01 jan 1970" in header.lower():
            jar.pop(name, None)
        else:
            jar[name] = value
    return resp.status, resp.headers.get("Location"), resp.read().decode(errors="replace")


def form_of(page):
    action = re.search(r'<form[^>]*action="([^"]+)"', page)
    if not action:
        return None, None
    fields = {}
    for tag in re.findall(r"<input[^>]*>", page):
        name, value = re.search(r'name="([^"]*)"', tag), re.search(r'value="([^"]*)"', tag)
        if 'type="hidden"' in tag and name:
            fields[html.unescape(name.group(1))] = html.unescape(value.group(1)) if value else ""
    return html.unescape(action.group(1)), fields


def main():
    origin, user = sys.argv[1], sys.argv[2]
    url, form = f"{origin}/oauth2/start?rd=%2F", None
    for _ in range(15):
        status, location, page = send(url, form)
        form = None
        if status in (301, 302, 303, 307, 308):
            url = urllib.parse.urljoin(url, location)
            if url.startswith(origin) and urllib.parse.urlparse(url).path == "/":
                break
            continue
        action, fields = form_of(page)
        if action is None:
            sys.exit(f"no form and no redirect at {url} ({status}): {page[:300]}")
        if 'name="login"' in page:
            fields.update(login=user, password="any")
        url, form = urllib.parse.urljoin(url, action), fields
    session = {k: v for k, v in jar.items() if k.startswith("_oauth2_proxy") and "csrf" not in k}
    if not session:
        sys.exit(f"oauth2-proxy set no session cookie; cookies: {sorted(jar)}")
    print("; ".join(f"{k}={v}" for k, v in session.items()))


main()
