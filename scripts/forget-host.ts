// Cold failover step: drops a dead host's resources from a stack's state (nothing runs on the host).
//   npm run forget-host -- <stack> <host>
// Without it, the next `pulumi up` would try to delete the dead host's files over SSH and fail.
// The state is exported, the host's MailHost component and all its children are removed, and the
// result imported (the Pulumi CLI keeps a backup of the previous state in the backend).
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";

function main() {
    const [stack, host] = process.argv.slice(2);
    if (!stack || !host || !/^[a-z][a-z0-9-]{0,62}$/.test(host)) throw new Error("usage: forget-host <stack> <host>");
    const pulumi = path.resolve(__dirname, "pulumi");
    const state = JSON.parse(execFileSync(pulumi, ["stack", "export", "--stack", stack], { encoding: "utf8", maxBuffer: 256 << 20 }));
    const resources: { urn: string; dependencies?: string[]; propertyDependencies?: Record<string, string[]> }[] = state.deployment.resources ?? [];
    // the component is "...::<host>", its children "...::<host>:packages", "...::<host>/etc/..."
    const mine = new RegExp(`::${host}($|[:/])`);
    const kept = resources.filter((r) => !mine.test(r.urn));
    const dropped = resources.length - kept.length;
    if (!dropped) {
        console.log(`forget-host: stack ${stack} has no resources of ${host}`);
        return;
    }
    // other hosts' resources may depend on the dead host's (e.g. the relays' deliver-to-new-store): the
    // import refuses dangling dependencies, and they are void once the host is gone
    const gone = new Set(resources.filter((r) => mine.test(r.urn)).map((r) => r.urn));
    for (const r of kept) {
        if (r.dependencies) r.dependencies = r.dependencies.filter((u) => !gone.has(u));
        for (const [k, deps] of Object.entries(r.propertyDependencies ?? {})) r.propertyDependencies![k] = deps.filter((u) => !gone.has(u));
    }
    state.deployment.resources = kept;
    delete state.deployment.pending_operations;
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "mailinfra-state-")), "state.json");
    fs.writeFileSync(file, JSON.stringify(state), { mode: 0o600 });
    try {
        execFileSync(pulumi, ["stack", "import", "--stack", stack, "--file", file], { stdio: ["ignore", "ignore", "inherit"] });
    } finally {
        fs.rmSync(path.dirname(file), { recursive: true, force: true });
    }
    console.log(`forget-host: dropped ${dropped} resource(s) of ${host} from stack ${stack}`);
}

try {
    main();
} catch (e) {
    console.error(`forget-host: ${(e as Error).message}`);
    process.exit(1);
}
