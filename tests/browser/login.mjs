// Logs in through the provider's real pages in headless Chromium (Debian's package)
// and prints what the browser finally shows, as JSON on stdout.
// Usage: node login.mjs START_URL USER [HOST_RULES]   (HAR_PATH=file records a HAR)
// START_URL is a guarded page; HOST_RULES maps names to loopback (Chromium's
// --host-resolver-rules), so the app keeps its real host name.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [start, user, hostRules] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), 'portcullis-chromium-'));
const args = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  // Plain-http test hosts must not be upgraded to https behind the test's back.
  '--disable-features=HttpsUpgrades,HttpsFirstBalancedModeAutoEnable',
];
if (hostRules) args.push(`--host-resolver-rules=${hostRules}`);

const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args,
  // A test provider with its own certificate authority (tests/kind).
  ignoreHTTPSErrors: process.env.IGNORE_HTTPS_ERRORS === '1',
  // HAR_PATH records the session as a HAR file (test data for `explain har`).
  ...(process.env.HAR_PATH ? { recordHar: { path: process.env.HAR_PATH, content: 'embed' } } : {}),
});
const hops = [];
try {
  const page = browser.pages()[0] ?? (await browser.newPage());
  page.on('framenavigated', (f) => { if (f === page.mainFrame()) hops.push(f.url()); });
  await page.goto(start);
  const appOrigin = new URL(start).origin;
  for (let step = 0; step < 6 && new URL(page.url()).origin !== appOrigin; step += 1) {
    const login = page.locator('input[name="login"]');
    if (await login.count()) {
      await login.fill(user);
      const password = page.locator('input[name="password"]');
      if (await password.count()) await password.fill('any');
    }
    const before = page.url();
    await Promise.all([
      page.waitForURL((u) => u.href !== before, { timeout: 10000 }),
      page.locator('button[type="submit"]').first().click(),
    ]);
  }
  await page.waitForURL((u) => u.origin === appOrigin && !u.pathname.startsWith('/oauth2/'), { timeout: 10000 });
  const cookies = (await browser.cookies(appOrigin)).map((c) => ({ name: c.name, httpOnly: c.httpOnly, sameSite: c.sameSite }));
  console.log(JSON.stringify({ url: page.url(), body: await page.locator('body').innerText(), cookies, hops }));
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
