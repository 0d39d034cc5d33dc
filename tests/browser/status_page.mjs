// Drives the system Chromium (headless) through tftplb's status page, for tests/admin.rs:
// load it, check the backend rows, click "Drain" on one backend, see its state change, and
// keep a screenshot. Usage: node status_page.mjs URL SCREENSHOT.png BACKEND_ADDRESS
// Prints one JSON line with what it saw; exits non-zero on any failure.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [url, screenshot, backend] = process.argv.slice(2);
const userDataDir = mkdtempSync(join(tmpdir(), 'tftplb-chromium-'));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  timeout: 20000,
  viewport: { width: 1400, height: 560 },
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const seen = {};
try {
  const page = context.pages()[0] ?? await context.newPage();
  page.setDefaultTimeout(10000);
  await page.goto(url);
  seen.title = await page.title();
  const rows = page.locator('tr.backend');
  seen.rows = await rows.evaluateAll(rs => rs.map(r => ({
    backend: r.dataset.backend, admin: r.dataset.admin, health: r.dataset.health,
  })));
  const row = page.locator(`tr.backend[data-backend="${backend}"]`);
  seen.before = await row.getAttribute('data-admin');
  await Promise.all([
    page.waitForURL(/\?msg=/),
    row.locator('button.drain').click(),
  ]);
  seen.message = (await page.locator('#message').textContent()).trim();
  seen.after = await page.locator(`tr.backend[data-backend="${backend}"]`).getAttribute('data-admin');
  seen.drainDisabled = await page.locator(`tr.backend[data-backend="${backend}"] button.drain`).isDisabled();
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(JSON.stringify(seen));
} finally {
  await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
