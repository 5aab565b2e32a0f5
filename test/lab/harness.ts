// Helpers for lab tests: real lab hosts (lab/lab.sh), the real engine (scripts/pulumi), SSH.
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { parseKnownHosts } from "../../lib/hostKeys";

export const REPO = path.resolve(__dirname, "..", "..");
export const LAB_CACHE = process.env.LAB_CACHE ?? "/var/cache/mailinfra/lab";

export interface Run {
    code: number;
    out: string;
}

export function run(cmd: string, args: string[], opts: { cwd?: string; env?: Record<string, string>; input?: string } = {}): Run {
    const r = spawnSync(cmd, args, {
        cwd: opts.cwd ?? REPO,
        env: { ...process.env, ...opts.env },
        input: opts.input,
        encoding: "utf8",
        maxBuffer: 64 * 1024 * 1024,
    });
    return { code: r.status ?? -1, out: `${r.stdout ?? ""}${r.stderr ?? ""}` };
}

export function pulumi(args: string[], opts: { cwd?: string } = {}): Run {
    const cwd = opts.cwd ?? REPO;
    // a copied project (broken-template test) shares the real project's state backend
    return run(path.join(cwd, "scripts", "pulumi"), [...args, "--non-interactive", "--color=never"], {
        cwd,
        env: { PULUMI_BACKEND_URL: `file://${REPO}/.pulumi-state`, PULUMI_HOME: `${REPO}/.pulumi-home` },
    });
}

/** The SSH host keys lab.sh recorded for a lab host ($LAB_RUN/known_hosts: the lab stack's pins). */
export function labHostKeys(nameOrAddress: string): string[] {
    const record = path.join(process.env.LAB_RUN ?? "/var/tmp/mailinfra-lab", "known_hosts");
    return parseKnownHosts(fs.readFileSync(record, "utf8"))
        .filter((e) => e.names.includes(nameOrAddress))
        .flatMap((e) => e.keys);
}

export function ssh(address: string, command: string): Run {
    return run("ssh", ["-F", path.join(LAB_CACHE, "ssh_config"), address, command]);
}

/** A throw-away copy of the project (node_modules shared) for tests that edit templates or stack files. */
export function projectCopy(): string {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mailinfra-copy-"));
    for (const entry of fs.readdirSync(REPO)) {
        if ([".git", "node_modules", ".pulumi-state", ".pulumi-home", "rendered"].includes(entry)) continue;
        fs.cpSync(path.join(REPO, entry), path.join(dir, entry), { recursive: true });
    }
    fs.symlinkSync(path.join(REPO, "node_modules"), path.join(dir, "node_modules"));
    return dir;
}

/** Bare lab hosts and an empty lab stack: what `pulumi up` must converge from. */
export function freshLab(hosts: string[]): void {
    must(run(path.join(REPO, "scripts", "lab-fresh.sh"), hosts), "fresh lab");
}

export function must(r: Run, what: string): Run {
    if (r.code !== 0) throw new Error(`${what} failed (exit ${r.code}):\n${r.out.slice(-6000)}`);
    return r;
}

export function smokePassword(): string {
    const r = must(pulumi(["config", "get", "mailinfra:smokePassword", "--stack", "lab"]), "reading smoke password");
    return r.out.trim();
}

/** A converged lab for this checkout: reused when a preview shows no changes, otherwise converged from bare hosts. */
export function convergedLab(hosts: string[]): void {
    must(run(path.join(REPO, "lab", "lab.sh"), ["up", ...hosts]), "lab up");
    must(run(path.join(REPO, "scripts", "lab-fixtures.sh"), []), "lab fixtures");
    const ownerFile = path.join(process.env.LAB_RUN ?? "/var/tmp/mailinfra-lab", "fleet-owner");
    const owner = fs.existsSync(ownerFile) ? fs.readFileSync(ownerFile, "utf8").trim() : "";
    // another checkout's converge leaves hosts this checkout's state does not describe
    if (owner === REPO && pulumi(["preview", "--stack", "lab", "--expect-no-changes"]).code === 0) return;
    freshLab(hosts);
    must(pulumi(["up", "--stack", "lab", "--yes", "--skip-preview"]), "pulumi up");
}

export const FLEET = ["mchenry", "sanger", "lily", "otrs", "streber"];

/** `exim -bt` on a host: the routing of one address, as Exim reports it. */
export function eximRoute(address: string, hostAddress: string): string {
    return ssh(hostAddress, `exim4 -bt '${address.replace(/'/g, `'\\''`)}' 2>&1`).out;
}

/** swaks from the lab's "internet" host ext, against a lab host; returns swaks' transcript. */
export function swaksFromExt(args: string[]): Run {
    const quoted = args.map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(" ");
    return ssh("198.51.100.20", `swaks --timeout 30 --hide-informational ${quoted} 2>&1`);
}

export function waitFor(predicate: () => boolean, timeoutMs = 60_000, stepMs = 1000): boolean {
    const end = Date.now() + timeoutMs;
    while (Date.now() < end) {
        if (predicate()) return true;
        spawnSync("sleep", [String(stepMs / 1000)]);
    }
    return false;
}
