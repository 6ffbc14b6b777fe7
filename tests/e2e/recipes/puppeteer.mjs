// Puppeteer through asset-proxy. Chromium trusts the proxy's CA through the NSS database in
// $HOME/.pki/nssdb (see the README).
//
// usage: node puppeteer.mjs PROXY_URL APP_URL   — prints the app's verdict
import puppeteer from 'puppeteer-core';

const [proxy, url] = process.argv.slice(2);
const browser = await puppeteer.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--no-first-run', '--disable-quic', `--proxy-server=${proxy}`, '--proxy-bypass-list=<-loopback>'],
});
try {
  const page = await browser.newPage();
  await page.goto(url);
  await page.waitForFunction(() => document.getElementById('result').textContent !== 'loading', { timeout: 60_000 });
  console.log(await page.$eval('#result', (element) => element.textContent));
} finally {
  await browser.close();
}
