// npm run bench: how fast bare hosts become a working mail system, and how cheap a no-op is.
// One run, figures side by side, printed as a table and as JSON (bench/last.json).
import { execFileSync, spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { convergedLab, FLEET, ssh as labSsh } from "../test/lab/harness";
import { SECRET_NAMES } from "../lib/plan";
import { ensureLoadGenerator, LOAD_SESSIONS, PipelineFigures, pipelineFigures, RELAY, removeBatch, sendBatch, waitForBatch } from "../test/lab/load";

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

export interface HostActivity {
    commands: number;
    /** first command started / last command finished, seconds after the `pulumi up` started */
    first_s: number;
    done_s: number;
    /** time with at least one command running on the host (union of the command intervals) */
    busy_s: number;
}

/** What the provider recorded (MAILINFRA_STATS_FILE: "host<TAB>start ms<TAB>end ms" per finished command),
 *  per host, relative to `startedMs` (the moment the bench started `pulumi up`). */
function hostActivity(startedMs: number): Record<string, HostActivity> {
    const spans = new Map<string, [number, number][]>();
    if (!fs.existsSync(statsFile)) return {};
    for (const line of fs.readFileSync(statsFile, "utf8").split("\n").filter(Boolean)) {
        const [host, start, end] = line.split("\t");
        const list = spans.get(host) ?? [];
        list.push([Number(start), Number(end)]);
        spans.set(host, list);
    }
    fs.rmSync(statsFile);
    const out: Record<string, HostActivity> = {};
    for (const [host, list] of [...spans].sort(([a], [b]) => a.localeCompare(b))) {
        list.sort((a, b) => a[0] - b[0]);
        let busy = 0;
        let [cs, ce] = list[0];
        for (const [s, e] of list.slice(1)) {
            if (s > ce) {
                busy += ce - cs;
                [cs, ce] = [s, e];
            } else ce = Math.max(ce, e);
        }
        busy += ce - cs;
        const sec = (ms: number) => +(ms / 1000).toFixed(1);
        out[host] = { commands: list.length, first_s: sec(list[0][0] - startedMs), done_s: sec(Math.max(...list.map((x) => x[1])) - startedMs), busy_s: sec(busy) };
    }
    return out;
}
const commandCounts = (a: Record<string, HostActivity>) => Object.fromEntries(Object.entries(a).map(([h, x]) => [h, x.commands]));

/** Names of the lab hosts by address (the provider records addresses). */
function labHostNames(): Map<string, string> {
    const names = new Map<string, string>();
    for (const line of fs.readFileSync(path.join(repo, "lab", "hosts"), "utf8").split("\n")) {
        const m = /^([a-z][a-z0-9-]*)\s+(\S+)/.exec(line);
        if (m) names.set(m[2], m[1]);
    }
    return names;
}
const byName = <T>(r: Record<string, T>): Record<string, T> => {
    const names = labHostNames();
    return Object.fromEntries(Object.entries(r).map(([k, v]) => [names.get(k) ?? k, v]));
};

/** Cold failover of the store (issue: failover) is measured by test/lab/ops.test.ts, which writes
 *  bench/failover-last.json; the bench reports the latest one with its date (it does not rerun the failover). */
function failoverFigure(): Record<string, unknown> | undefined {
    const file = path.join(repo, "bench", "failover-last.json");
    if (!fs.existsSync(file)) return undefined;
    const f = JSON.parse(fs.readFileSync(file, "utf8"));
    return { rto_s: f.rtoSeconds, pulumi_up_s: f.upSeconds, restore_and_imaps_s: f.restoreSeconds, measured_at: f.at, source: "test/lab/ops.test.ts \"cold failover of the store onto spare\" (bench/failover-last.json; not rerun by the bench)" };
}

/** Drift repairs and the bare-host rebuild, one `up --refresh` each, as test/lab/converge.test.ts last measured them. */
function convergeFigure(): Record<string, unknown> | undefined {
    const file = path.join(repo, "bench", "converge-last.json");
    if (!fs.existsSync(file)) return undefined;
    return { ...JSON.parse(fs.readFileSync(file, "utf8")), source: "test/lab/converge.test.ts (bench/converge-last.json; not rerun by the bench)" };
}

// Mail pipeline: internet host (ext) -> relay (SpamAssassin) -> store Maildir, with smtp-source (test/lab/load.ts)
const MAIL_MESSAGES = Number(process.env.BENCH_MAIL_MESSAGES ?? 200);
const MAIL_RUNS = Number(process.env.BENCH_MAIL_RUNS ?? 3);
const SIZES = [1024, 100 * 1024];
const RELAY_CONF = "/etc/exim4/exim4.conf";
const SAVED_CONF = "/run/mailinfra-bench-exim4.conf";

/** Lab only, for the comparison run: the relay's DATA ACL without the spamd call, restored byte for byte afterwards. */
function withScanningDisabled<T>(fn: () => Promise<T>): Promise<T> {
    const r = labSsh(RELAY, `set -e; cp -p ${RELAY_CONF} ${SAVED_CONF}; sed -i 's/^  accept  acl = spamassassin$/  accept/' ${RELAY_CONF}; ! grep -q 'acl = spamassassin' ${RELAY_CONF}; exim4 -bV >/dev/null; systemctl reload exim4`);
    if (r.code !== 0) throw new Error(`disabling the relay's scan failed:\n${r.out}`);
    const restore = () => {
        const back = labSsh(RELAY, `set -e; cp -p ${SAVED_CONF} ${RELAY_CONF}; rm -f ${SAVED_CONF}; systemctl reload exim4`);
        if (back.code !== 0) throw new Error(`restoring the relay's config failed:\n${back.out}`);
    };
    // a bench stopped by a signal (e.g. a timeout) must not leave the relay unscanned
    const onSignal = () => {
        restore();
        process.exit(130);
    };
    process.once("SIGTERM", onSignal);
    process.once("SIGINT", onSignal);
    return fn().finally(() => {
        process.removeListener("SIGTERM", onSignal);
        process.removeListener("SIGINT", onSignal);
        restore();
    });
}

async function mailCase(bodyBytes: number): Promise<PipelineFigures[]> {
    const runs: PipelineFigures[] = [];
    for (let i = 0; i < MAIL_RUNS; i++) {
        const batch = await sendBatch({ server: RELAY, count: MAIL_MESSAGES, bodyBytes });
        if (batch.exitCode !== 0) throw new Error(`smtp-source failed:\n${batch.output.slice(-2000)}`);
        const { tally, found } = await waitForBatch(batch, 15 * 60_000);
        removeBatch(batch.tag);
        if (tally.lost.length) throw new Error(`mail bench: ${tally.lost.length} of ${tally.expected} messages not delivered (${bodyBytes} B)`);
        runs.push(pipelineFigures(batch, found));
    }
    return runs;
}

const medianOf = (runs: PipelineFigures[]): PipelineFigures => {
    const m = (k: keyof PipelineFigures) => median(runs.map((r) => r[k]));
    return { messages: m("messages"), bodyBytes: m("bodyBytes"), messagesPerSecond: m("messagesPerSecond"), acceptedPerSecond: m("acceptedPerSecond"), latencyP50_s: m("latencyP50_s"), latencyP99_s: m("latencyP99_s"), sinceBatchStartP50_s: m("sinceBatchStartP50_s"), sinceBatchStartP99_s: m("sinceBatchStartP99_s") };
};

async function mailPipeline(): Promise<Record<string, unknown>> {
    ensureLoadGenerator();
    const scanned: Record<string, PipelineFigures> = {};
    const unscanned: Record<string, PipelineFigures> = {};
    const all: Record<string, PipelineFigures[]> = {};
    for (const size of SIZES) all[`scan_${size}`] = await mailCase(size);
    await withScanningDisabled(async () => {
        for (const size of SIZES) all[`noscan_${size}`] = await mailCase(size);
    });
    for (const size of SIZES) {
        scanned[`${size / 1024}KB`] = medianOf(all[`scan_${size}`]);
        unscanned[`${size / 1024}KB`] = medianOf(all[`noscan_${size}`]);
    }
    const ratio: Record<string, number> = {};
    for (const k of Object.keys(scanned)) ratio[k] = +(unscanned[k].messagesPerSecond / scanned[k].messagesPerSecond).toFixed(2);
    return {
        mail_pipeline: { messages_per_run: MAIL_MESSAGES, runs: MAIL_RUNS, sessions: LOAD_SESSIONS, generator: "postfix smtp-source (Debian postfix .deb, dpkg -x on ext)", latency: "per message, the relay starting to receive its data (its Exim message id, 0.5 ms) -> file in the store's Maildir (mtime); sinceBatchStart = from smtp-source's start (its Date header, formatted once per run)", scanned, unscanned, unscanned_over_scanned_msgs_per_s: ratio, runs_detail: all },
    };
}

function prodPreview(): number {
    // a throw-away copy of the project with its own state and placeholder secrets: nothing touches a host
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mailinfra-bench-prod-"));
    for (const e of fs.readdirSync(repo)) if (![".git", "node_modules", ".pulumi-state", ".pulumi-home", "rendered", "bench"].includes(e)) fs.cpSync(path.join(repo, e), path.join(dir, e), { recursive: true });
    fs.symlinkSync(path.join(repo, "node_modules"), path.join(dir, "node_modules"));
    const env = { PULUMI_BACKEND_URL: `file://${dir}/.state`, PULUMI_CONFIG_PASSPHRASE: "bench", PULUMI_HOME: path.join(repo, ".pulumi-home") };
    const p = (args: string[]) => timed(path.join(dir, "scripts", "pulumi"), [...args, "--non-interactive"], env);
    try {
        p(["stack", "init", "prod"]);
        // every secret a host file may need (the prod stack needs mailmanWebSecret since the lists web UI)
        for (const k of SECRET_NAMES) p(["config", "set", "--stack", "prod", "--secret", `mailinfra:${k}`, `placeholder-${k}`]);
        const runs = [p(["preview", "--stack", "prod"]), p(["preview", "--stack", "prod"]), p(["preview", "--stack", "prod"])];
        return median(runs);
    } finally {
        fs.rmSync(dir, { recursive: true, force: true });
    }
}

async function main() {
    const figures: Record<string, unknown> = {
        machine: { cpus: os.cpus().length, memoryGiB: Math.round(os.totalmem() / 2 ** 30), kernel: os.release(), node: process.version, loadavg1_at_start: +os.loadavg()[0].toFixed(2), shared_with_other_jobs: true },
    };
    // --mail-only: reuse (or converge) the lab and measure only the mail pipeline (tuning iterations)
    if (process.argv.includes("--mail-only")) {
        convergedLab(FLEET);
        Object.assign(figures, await mailPipeline());
        printMail(figures);
        fs.mkdirSync(path.join(repo, "bench"), { recursive: true });
        fs.writeFileSync(path.join(repo, "bench", "last-mail.json"), JSON.stringify(figures, null, 2) + "\n");
        console.log(JSON.stringify(figures));
        return;
    }
    // bare hosts (and a bare spare for the apt floor) and an empty stack
    timed(path.join(repo, "scripts", "lab-fresh.sh"), [...HOSTS, "spare"]);

    const convergeStarted = Date.now();
    const converge = pulumi(["up", "--stack", "lab", "--yes", "--skip-preview"], { MAILINFRA_STATS_FILE: statsFile });
    const convergeHosts = byName(hostActivity(convergeStarted));
    const convergeCommands = commandCounts(convergeHosts);

    // the floor: a plain apt-get install of the same packages on a fresh host, in the same run
    const packages = execFileSync(path.join(repo, "scripts", "pulumi"), ["stack", "export", "--stack", "lab"], { cwd: repo, encoding: "utf8", maxBuffer: 64 << 20 });
    const all = new Set<string>();
    for (const r of JSON.parse(packages).deployment.resources) if (r.type === "mailinfra:host:Packages") for (const p of r.inputs.packages) all.add(p);
    const ssh = ["-F", "/var/cache/mailinfra/lab/ssh_config", "spare"];
    const floor = timed("ssh", [...ssh, `export DEBIAN_FRONTEND=noninteractive; apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends ${[...all].join(" ")} >/dev/null`]);

    const noopUp: number[] = [];
    const noopRefresh: number[] = [];
    const noopPreview: number[] = [];
    let noopCommands: Record<string, number> = {};
    let refreshCommands: Record<string, number> = {};
    for (let i = 0; i < 3; i++) {
        let started = Date.now();
        noopUp.push(pulumi(["up", "--stack", "lab", "--yes", "--skip-preview"], { MAILINFRA_STATS_FILE: statsFile }));
        noopCommands = commandCounts(byName(hostActivity(started)));
        started = Date.now();
        noopRefresh.push(pulumi(["up", "--refresh", "--stack", "lab", "--yes", "--skip-preview", "--expect-no-changes"], { MAILINFRA_STATS_FILE: statsFile }));
        refreshCommands = commandCounts(byName(hostActivity(started)));
        noopPreview.push(pulumi(["preview", "--stack", "lab", "--expect-no-changes"]));
    }
    const unit = timed("npx", ["vitest", "run", "--project", "unit"]);
    const prod = prodPreview();

    Object.assign(figures, {
        converge_s: +converge.toFixed(1),
        apt_floor_s: +floor.toFixed(1),
        converge_over_apt_floor: +(converge / floor).toFixed(2),
        converge_remote_commands: convergeCommands,
        converge_per_host: convergeHosts,
        noop_up_median_s: +median(noopUp).toFixed(1),
        noop_up_includes: "smoke mail through relay and IMAPS",
        noop_up_remote_commands: noopCommands,
        noop_up_refresh_median_s: +median(noopRefresh).toFixed(1),
        noop_up_refresh_remote_commands: refreshCommands,
        drift_repairs: convergeFigure() ?? "not measured (no bench/converge-last.json: run test/lab/converge.test.ts)",
        noop_preview_median_s: +median(noopPreview).toFixed(1),
        unit_mock_run_s: +unit.toFixed(1),
        prod_preview_median_s: +prod.toFixed(1),
        cold_failover_store: failoverFigure() ?? "not measured (no bench/failover-last.json: run test/lab/ops.test.ts)",
    });
    fs.mkdirSync(path.join(repo, "bench"), { recursive: true });
    fs.writeFileSync(path.join(repo, "bench", "last.json"), JSON.stringify(figures, null, 2) + "\n");
    const rows: [string, string][] = [
        ["converge 5 bare hosts -> smoke mail delivered", `${figures.converge_s} s`],
        ["apt floor (same packages, one fresh host)", `${figures.apt_floor_s} s`],
        ["converge / apt floor", `${figures.converge_over_apt_floor}`],
        ["no-op pulumi up (median of 3, incl. smoke)", `${figures.noop_up_median_s} s`],
        ["no-op pulumi up --refresh (median of 3, incl. smoke)", `${figures.noop_up_refresh_median_s} s`],
        ["remote commands, no-op up --refresh", JSON.stringify(refreshCommands)],
        ["no-op pulumi preview (median of 3)", `${figures.noop_preview_median_s} s`],
        ["remote commands, converge", JSON.stringify(convergeCommands)],
        ["remote commands, no-op up", JSON.stringify(noopCommands)],
        ["unit tests under mocks", `${figures.unit_mock_run_s} s`],
        ["prod stack pulumi preview (median of 3, no hosts)", `${figures.prod_preview_median_s} s`],
    ];
    const fo = failoverFigure();
    rows.push(["cold failover of the store, RTO", fo ? `${fo.rto_s} s (ops.test.ts run at ${fo.measured_at}, not rerun)` : "not measured"]);
    console.log(`machine: ${JSON.stringify(figures.machine)}`);
    for (const [k, v] of rows) console.log(`${k.padEnd(48)} ${v}`);
    console.log(`converge per host (s after up started: first command / done; busy = time with a command running)`);
    for (const [h, a] of Object.entries(convergeHosts)) console.log(`  ${h.padEnd(10)} first ${String(a.first_s).padStart(5)}  done ${String(a.done_s).padStart(5)}  busy ${String(a.busy_s).padStart(5)}  commands ${a.commands}`);
    // the figures so far are kept (file and output) even if the mail pipeline fails
    Object.assign(figures, await mailPipeline());
    fs.writeFileSync(path.join(repo, "bench", "last.json"), JSON.stringify(figures, null, 2) + "\n");
    printMail(figures);
    console.log(JSON.stringify(figures));
}

function printMail(figures: Record<string, unknown>) {
    const mail = figures.mail_pipeline as { scanned: Record<string, PipelineFigures>; unscanned: Record<string, PipelineFigures>; unscanned_over_scanned_msgs_per_s: Record<string, number>; messages_per_run: number; runs: number };
    console.log(`mail pipeline ext -> relay -> store Maildir, ${mail.messages_per_run} messages x ${mail.runs} runs, ${LOAD_SESSIONS} sessions (medians)`);
    console.log(`${"case".padEnd(22)} ${"msg/s".padStart(7)} ${"accept/s".padStart(9)} ${"p50 s".padStart(7)} ${"p99 s".padStart(7)}   (latency: relay DATA -> store Maildir)`);
    for (const [label, set] of [["spamd on", mail.scanned], ["spamd off", mail.unscanned]] as const)
        for (const [size, f] of Object.entries(set))
            console.log(`${`${label}, ${size}`.padEnd(22)} ${String(f.messagesPerSecond).padStart(7)} ${String(f.acceptedPerSecond).padStart(9)} ${String(f.latencyP50_s).padStart(7)} ${String(f.latencyP99_s).padStart(7)}`);
    console.log(`unscanned / scanned msg/s: ${JSON.stringify(mail.unscanned_over_scanned_msgs_per_s)}`);
}

main().catch((e) => {
    console.error(e);
    process.exit(1);
});
