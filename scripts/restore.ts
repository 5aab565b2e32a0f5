// Restores the IMAP store from its backups:   npm run restore -- <stack> [SNAPSHOT|--list]
// Runs mailinfra-restore on the stack's current imap host (after a failover: the new one), which
// pulls the snapshot (default: the latest) from mailinfra:backup.targetHost, then pushes the
// restored account DB to the relays.
import { parseArgs } from "util";
import { hostsWithRole } from "../lib/config";
import { closeAllSessions, sessionFor } from "../provider/ssh";
import { loadStack } from "./stack";

async function main() {
    const { values, positionals } = parseArgs({ allowPositionals: true, options: { list: { type: "boolean" } } });
    const [stackName = "lab", snapshot] = positionals;
    const stack = loadStack(stackName);
    if (!stack.cfg.backup) throw new Error(`stack ${stackName} has no mailinfra:backup section`);
    if (snapshot && !/^(latest|\d{8}T\d{6}Z)$/.test(snapshot)) throw new Error(`not a snapshot name: ${snapshot} (YYYYMMDDTHHMMSSZ or latest)`);
    const [[store]] = hostsWithRole(stack.cfg, "imap");
    const started = Date.now();
    const r = await sessionFor(stack.connection(store)).run(`/usr/local/sbin/mailinfra-restore ${values.list ? "--list" : snapshot ?? "latest"}\n`);
    closeAllSessions();
    process.stdout.write(r.stdout);
    process.stderr.write(r.stderr);
    if (r.code !== 0) throw new Error(`mailinfra-restore on ${store} failed (exit ${r.code})`);
    if (!values.list) console.log(`restore on ${store} took ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

main().catch((e) => {
    console.error(`restore: ${e.message}`);
    process.exit(1);
});
