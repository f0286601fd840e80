//! `portcullis demo`, the README's first command: the development provider, the echo
//! backend and the proxy in one process, logged into and out of as a browser would.

use crate::common;

use common::Portcullis;
use common::app::callback_url;
use common::idp::log_out;

#[tokio::test]
async fn the_demo_logs_a_browser_in_and_out() {
    let demo = Portcullis::launch(&["demo".as_ref(), "--port".as_ref(), "0".as_ref()]);
    let origin = format!("http://localhost:{}", demo.http.port());
    let b = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .resolve("localhost", demo.http)
        .build()
        .unwrap();

    let open = b.get(format!("{origin}/")).send().await.unwrap();
    assert_eq!(open.status(), 200, "/ is not guarded");
    assert!(open.text().await.unwrap().contains("not guarded"));

    let callback = callback_url(&b, &origin, "/auth/profile", "zoe").await;
    let done = b.get(&callback).send().await.unwrap();
    assert_eq!(done.status(), 302, "{:?}", done.text().await);
    assert_eq!(done.headers()["location"], "/auth/profile");

    let page = b
        .get(format!("{origin}/auth/profile"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Logged in as <strong>zoe</strong>"), "{page}");
    assert!(
        page.contains("&quot;email&quot;: &quot;zoe@example.com&quot;"),
        "the decoded x-amzn-oidc-data: {page}"
    );

    let out = b
        .get(format!("{origin}/oauth2/logout"))
        .send()
        .await
        .unwrap();
    let to_provider = out.headers()["location"].to_str().unwrap().to_owned();
    let landed = log_out(&b, &to_provider, &format!("{origin}/")).await;
    assert_eq!(landed, format!("{origin}/"));
    let again = b
        .get(format!("{origin}/auth/profile"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 302, "logged out");
}
