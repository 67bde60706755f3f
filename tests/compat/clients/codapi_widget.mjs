// Drives codapi's widget in a real headless browser for tests/compat/test_codapi_widget.py:
// loads the page, clicks the run button of each snippet named, waits until the
// widget has its answer, and prints what the page shows, as JSON on stdout.
//
// Usage: node codapi_widget.mjs CONFIG_JSON
//   CONFIG_JSON: {"browser": PATH, "page": URL, "snippets": [ID, ...], "timeout_ms": N}
// Prints: {"snippets": {ID: {"state", "status", "output", "request"}}, "offsite": [URL...],
//          "console": [...]}
// Every request the page makes must go to a loopback address: any other is
// aborted and listed in "offsite".

import puppeteer from "puppeteer-core";

const config = JSON.parse(process.argv[2]);
const timeout = config.timeout_ms ?? 30000;

function loopback(url) {
    const { protocol, hostname } = new URL(url);
    if (protocol === "data:" || protocol === "about:") return true;
    return hostname === "127.0.0.1" || hostname === "localhost" || hostname === "[::1]";
}

const browser = await puppeteer.launch({
    executablePath: config.browser,
    headless: "shell",
    // The page is the test's own, served on loopback: no sandbox needed here.
    args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
           "--disable-background-networking", "--disable-component-update",
           "--disable-default-apps", "--disable-domain-reliability", "--no-pings",
           "--metrics-recording-only",
           // No host but 127.0.0.1 resolves: the browser's own traffic cannot
           // leave loopback either.
           "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"],
});
const result = { snippets: {}, offsite: [], console: [] };
try {
    const page = await browser.newPage();
    page.setDefaultTimeout(timeout);
    await page.setRequestInterception(true);
    const execs = [];
    page.on("request", (request) => {
        if (!loopback(request.url())) {
            result.offsite.push(request.url());
            request.abort();
            return;
        }
        if (request.url().endsWith("/exec") && request.method() === "POST") {
            execs.push(JSON.parse(request.postData()));
        }
        request.continue();
    });
    page.on("console", (message) => result.console.push(message.text()));
    await page.goto(config.page, { waitUntil: "load" });
    for (const id of config.snippets) {
        const button = `#${id} codapi-toolbar button`;
        await page.waitForSelector(button, { visible: true });
        const before = execs.length;
        await page.click(button);
        // The widget sets its state once the answer (or an error) is in.
        await page.waitForFunction(
            (snippet) => ["succeded", "failed"].includes(
                document.getElementById(snippet).getAttribute("state")),
            {}, id);
        result.snippets[id] = await page.evaluate((snippet) => {
            const el = document.getElementById(snippet);
            return {
                state: el.getAttribute("state"),
                status: el.querySelector("codapi-toolbar codapi-status").innerText.trim(),
                output: el.querySelector("codapi-output pre > code").innerText,
            };
        }, id);
        result.snippets[id].request = execs.length > before ? execs[execs.length - 1] : null;
    }
} finally {
    await browser.close();
}
process.stdout.write(JSON.stringify(result));
