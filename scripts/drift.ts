// Drift audit of a stack's hosts:   npm run drift -- <stack> [host...]
// Compares every managed file (content, mode, owner), package, user, group membership, directory, tmpfs
// mount and service (enabled, running, reading its declared files) with what the program renders (lib/roles → the same HostPlans `pulumi up` deploys) and prints a per-host report
// with a unified diff (rendered → on the host, so hand edits show as +/- lines). Files rendered
// from secrets are compared by hash only. Exit 0: no drift, 1: drift or a host not reachable.
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { parseArgs } from "util";
import { compareHost, expectedHost, observeScript, parseObservation, renderHostReport } from "../lib/drift";
import { batchMarker } from "../lib/observe";
import { SECRET_NAMES, SecretName } from "../lib/plan";
import { planFleet } from "../lib/roles";
import { closeAllSessions, sessionFor } from "../provider/ssh";
import { loadStack } from "./stack";

function unifiedDiff(rendered: string, onHost: string, label: string): string {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mailinfra-drift-"));
    try {
        fs.writeFileSync(path.join(dir, "a"), rendered);
        fs.writeFileSync(path.join(dir, "b"), onHost);
        const r = spawnSync("diff", ["-u", "--label", `rendered ${label}`, "--label", `on host ${label}`, "a", "b"], { cwd: dir, encoding: "utf8" });
        return r.stdout;
    } finally {
        fs.rmSync(dir, { recursive: true, force: true });
    }
}

async function main() {
    const { positionals } = parseArgs({ allowPositionals: true, options: {} });
    const [stackName = "lab", ...only] = positionals;
    const stack = loadStack(stackName);
    const secrets = Object.fromEntries(SECRET_NAMES.map((n) => [n, stack.secret(n)]).filter(([, v]) => v !== undefined)) as Partial<Record<SecretName, string>>;
    const plans = planFleet(stack.cfg).filter((p) => !only.length || only.includes(p.host));
    let drifted = 0;
    const reports = await Promise.all(
        plans.map(async (plan) => {
            const expected = expectedHost(plan, secrets);
            const session = sessionFor(stack.connection(plan.host));
            // one round trip: the same observations and probes as `pulumi up --refresh`
            const marker = batchMarker();
            let stdout: string;
            try {
                stdout = (await session.run(observeScript(expected, marker))).stdout;
            } catch (e) {
                drifted++;
                return `== ${plan.host}: not reachable (${(e as Error).message})`;
            }
            const items = compareHost(expected, parseObservation(expected, marker, stdout));
            const diffs: Record<string, string> = {};
            for (const i of items.filter((i) => i.onHost !== undefined)) {
                const f = expected.files.find((f) => f.path === i.name)!;
                diffs[i.name] = unifiedDiff(f.content!, i.onHost!, `${plan.host}:${f.path}`);
            }
            if (items.length) drifted++;
            return renderHostReport(plan.host, items, diffs);
        }),
    );
    closeAllSessions();
    console.log(reports.join("\n"));
    console.log(drifted ? `\nDRIFT on ${drifted} of ${plans.length} host(s)` : `\nno drift on ${plans.length} host(s)`);
    process.exit(drifted ? 1 : 0);
}

main().catch((e) => {
    console.error(`drift: ${e.message}`);
    process.exit(1);
});
