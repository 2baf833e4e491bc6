// Headless Chromium for every browser test: Debian's (`CHROMIUM_BIN` overrides it), driven by
// playwright-core, without a sandbox (the tests run as root in CI) or a GPU.
import { chromium } from 'playwright-core';

export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_BIN ?? '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu'],
  });
}
