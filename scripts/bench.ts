// npm run bench: how fast bare hosts become a working mail system, and how cheap a no-op is.
// One run, figures side by side, printed as a table and as JSON (bench/last.json).
import { execFileSync, spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";

const repo = path.resolve(__dirname, "..");
const HOSTS = ["mchenry", "sanger", "lily", "otrs", "streber"];
const statsFile = path.join(os.tmpdir(), `mailinfra-bench-stats-${process.pid}.jsonl`);

function timed(cmd: string, args: string[], env: Record<string, string> = {}): number {
    const t = process.hrtime.bigint();
    const r = spawnSync(cmd, args, { cwd: repo, env: { ...process.env, ...env }, encoding: "utf8", maxBuffer: 64 << 20 });
    if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} failed:\n${(r.stdout ?? "") + (r.stderr ?? "")}`.slice(-4000));
    return Number(process.hrtime.bigint() - t) / 1e9;
}
const pulumi = (args: string[], env: Record<string, string> = {}) => timed(path.join(repo, "scripts", "pulumi"), [...args, "--non-interactive"], env);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function commandsPerHost(): Record<string, number> {
    const out: Record<string, number> = {};
    if (!fs.existsSync(statsFile)) return out;
    for (const host of fs.readFileSync(statsFile, "utf8").split("\n").filter(Boolean)) out[host] = (out[host] ?? 0) + 1;
    fs.rmSync(statsFile);
    return out;
}

function main() {
    const figures: Record<string, unknown> = {
        machine: { cpus: os.cpus().length, memoryGiB: Math.round(os.totalmem() / 2 ** 30), kernel: os.release(), node: process.version },
    };
    // bare hosts (and a bare spare for the apt floor) and an empty stack
    timed(path.join(repo, "scripts", "lab-fresh.sh"), [...HOSTS, "spare"]);

    const converge = pulumi(["up", "--stack", "lab", "--yes", "--skip-preview"], { MAILINFRA_STATS_FILE: statsFile });
    const convergeCommands = commandsPerHost();

    // the floor: a plain apt-get install of the same packages on a fresh host, in the same run
    const packages = execFileSync(path.join(repo, "scripts", "pulumi"), ["stack", "export", "--stack", "lab"], { cwd: repo, encoding: "utf8", maxBuffer: 64 << 20 });
    const all = new Set<string>();
    for (const r of JSON.parse(packages).deployment.resources) if (r.type === "mailinfra:host:Packages") for (const p of r.inputs.packages) all.add(p);
    const ssh = ["-F", "/var/cache/mailinfra/lab/ssh_config", "spare"];
    const floor = timed("ssh", [...ssh, `export DEBIAN_FRONTEND=noninteractive; apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends ${[...all].join(" ")} >/dev/null`]);

    const noopUp: number[] = [];
    const noopPreview: number[] = [];
    let noopCommands: Record<string, number> = {};
    for (let i = 0; i < 3; i++) {
        noopUp.push(pulumi(["up", "--stack", "lab", "--yes", "--skip-preview"], { MAILINFRA_STATS_FILE: statsFile }));
        noopCommands = commandsPerHost();
        noopPreview.push(pulumi(["preview", "--stack", "lab", "--expect-no-changes"]));
    }
    const unit = timed("npx", ["vitest", "run", "--project", "unit"]);

    Object.assign(figures, {
        converge_s: +converge.toFixed(1),
        apt_floor_s: +floor.toFixed(1),
        converge_over_apt_floor: +(converge / floor).toFixed(2),
        converge_remote_commands: convergeCommands,
        noop_up_median_s: +median(noopUp).toFixed(1),
        noop_up_includes: "smoke mail through relay and IMAPS",
        noop_up_remote_commands: noopCommands,
        noop_preview_median_s: +median(noopPreview).toFixed(1),
        unit_mock_run_s: +unit.toFixed(1),
    });
    fs.mkdirSync(path.join(repo, "bench"), { recursive: true });
    fs.writeFileSync(path.join(repo, "bench", "last.json"), JSON.stringify(figures, null, 2) + "\n");
    const rows: [string, string][] = [
        ["converge 5 bare hosts -> smoke mail delivered", `${figures.converge_s} s`],
        ["apt floor (same packages, one fresh host)", `${figures.apt_floor_s} s`],
        ["converge / apt floor", `${figures.converge_over_apt_floor}`],
        ["no-op pulumi up (median of 3, incl. smoke)", `${figures.noop_up_median_s} s`],
        ["no-op pulumi preview (median of 3)", `${figures.noop_preview_median_s} s`],
        ["remote commands, converge", JSON.stringify(convergeCommands)],
        ["remote commands, no-op up", JSON.stringify(noopCommands)],
        ["unit tests under mocks", `${figures.unit_mock_run_s} s`],
    ];
    console.log(`machine: ${JSON.stringify(figures.machine)}`);
    for (const [k, v] of rows) console.log(`${k.padEnd(48)} ${v}`);
    console.log(JSON.stringify(figures));
}

main();
