// Sends one tagged message into the relay and reads it back over IMAPS on the store.
//   node scripts/run-ts.js scripts/smoke.ts [stack]     (exit 1 when mail does not flow)
import { execFileSync } from "child_process";
import * as path from "path";
import { CONFIG_OBJECTS, hostsWithRole, parseStackConfig } from "../lib/config";
import { smokeTest } from "../lib/smoke";

async function main() {
    const stack = process.argv[2] ?? "lab";
    const repo = path.resolve(__dirname, "..");
    // decrypted by the CLI into this process's memory only
    const json = execFileSync(path.join(repo, "scripts", "pulumi"), ["config", "--stack", stack, "--json", "--show-secrets"], { encoding: "utf8" });
    const raw = JSON.parse(json) as Record<string, { value: string }>;
    const get = (k: string) => raw[`mailinfra:${k}`]?.value;
    const cfg = parseStackConfig(Object.fromEntries(CONFIG_OBJECTS.filter((k) => get(k) !== undefined).map((k) => [k, JSON.parse(get(k)!)])), { stack });
    const [[, relay]] = hostsWithRole(cfg, "relay");
    const [[, store]] = hostsWithRole(cfg, "imap");
    const r = await smokeTest({ relayAddress: relay.address, storeAddress: store.address, account: cfg.smoke.account, password: get("smokePassword")!, timeoutMs: 90000, certificate: cfg.tls.certificate });
    if (r.ok) {
        console.log(`smoke: OK — ${r.token} accepted by ${relay.address} (${r.smtpResponse}) and read over IMAPS from ${store.address} after ${r.foundAfterMs} ms`);
        console.log(`  ${r.certificate}`);
        for (const h of r.received ?? []) console.log(`  ${h.replace(/\s+/g, " ").slice(0, 160)}`);
    } else {
        console.error(`smoke: FAILED — ${r.error}`);
        process.exit(1);
    }
}
main().catch((e) => {
    console.error(`smoke: FAILED — ${e.message}`);
    process.exit(1);
});
