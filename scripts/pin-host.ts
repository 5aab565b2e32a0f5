// pin-host: records a host's SSH host keys as its pins, after the operator compared them out of band.
//   npm run pin-host -- --stack STACK [--yes] NAME...
// Fetches the keys the host presents (ssh-keyscan to its configured address), shows their fingerprints next to the
// current pins, asks y/N on the terminal, then writes them: into the stack's ssh.hostKeysFile when it has one (the
// lab's record), otherwise into mailinfra:hosts.NAME.sshHostKeys with `pulumi config set --path`. Then run `pulumi up`.
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { parseArgs } from "node:util";
import { fqdnOf, StackConfig } from "../lib/config";
import { describeHostKey, parseHostKey, parseKnownHosts, pinText, replaceInKnownHosts } from "../lib/hostKeys";
import { readStackFile } from "../lib/stackFile";

const REPO = path.resolve(__dirname, "..");
const USAGE = "usage: npm run pin-host -- --stack STACK [--yes] NAME...";

function scan(cfg: StackConfig, name: string): string[] {
    const h = cfg.hosts[name];
    let out: string;
    try {
        out = execFileSync("ssh-keyscan", ["-T", "10", "-p", String(cfg.ssh.port), "-t", "ed25519,ecdsa,rsa", h.address], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
    } catch (e) {
        throw new Error(`ssh-keyscan ${h.address} failed: ${String((e as any).stderr ?? e).trim()}`);
    }
    const keys = parseKnownHosts(out).flatMap((e) => e.keys).map((k) => pinText(parseHostKey(k)));
    if (keys.length === 0) throw new Error(`${name} (${h.address}) presented no SSH host key`);
    return [...new Set(keys)];
}

/** y/N from the terminal itself (not stdin): a pin is never confirmed by a pipe by accident. */
function confirm(question: string): boolean {
    let fd: number;
    try {
        fd = fs.openSync("/dev/tty", "r+");
    } catch {
        throw new Error("no terminal to confirm on: compare the fingerprints out of band, then rerun with --yes");
    }
    try {
        fs.writeSync(fd, `${question} [y/N] `);
        const buf = Buffer.alloc(256);
        const n = fs.readSync(fd, buf, 0, buf.length, null);
        return /^y(es)?$/i.test(buf.subarray(0, n).toString("utf8").trim());
    } finally {
        fs.closeSync(fd);
    }
}

function record(stack: string, cfg: StackConfig, name: string, keys: string[]): string {
    const file = cfg.ssh.hostKeysFile;
    if (file) {
        const old = fs.existsSync(file) ? fs.readFileSync(file, "utf8") : "";
        const tmp = `${file}.pin-host.${process.pid}`;
        fs.writeFileSync(tmp, replaceInKnownHosts(old, cfg.hosts[name].address, [name, fqdnOf(cfg, name), cfg.hosts[name].address], keys), { mode: 0o644 });
        fs.renameSync(tmp, file);
        return file;
    }
    const pulumi = (args: string[]) => execFileSync(path.join(REPO, "scripts", "pulumi"), [...args, "--stack", stack], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
    const key = `mailinfra:hosts.${name}.sshHostKeys`;
    if (cfg.hosts[name].sshHostKeys?.length) pulumi(["config", "rm", "--path", key]);
    keys.forEach((k, i) => pulumi(["config", "set", "--path", `${key}[${i}]`, k]));
    return `${key} (Pulumi.${stack}.yaml)`;
}

function main(argv: string[]): number {
    const { values, positionals } = parseArgs({
        args: argv,
        allowPositionals: true,
        options: { stack: { type: "string" }, yes: { type: "boolean", default: false }, help: { type: "boolean", short: "h", default: false } },
    });
    if (values.help || !values.stack || positionals.length === 0) {
        console.log(USAGE);
        return values.help ? 0 : 2;
    }
    const stack = values.stack;
    if (!/^[a-z][a-z0-9-]*$/.test(stack)) throw new Error(`invalid stack name "${stack}"`);
    const cfg = readStackFile(REPO, stack, { requirePins: false });
    for (const name of positionals) if (!cfg.hosts[name]) throw new Error(`${name} is not a host of stack ${stack} (${Object.keys(cfg.hosts).join(", ")})`);
    let changed = 0;
    for (const name of positionals) {
        const h = cfg.hosts[name];
        const keys = scan(cfg, name);
        const pinned = new Set((h.sshHostKeys ?? []).map((k) => pinText(parseHostKey(k))));
        console.log(`${name} (${h.address}) presents:`);
        for (const k of keys) console.log(`  ${describeHostKey(k)}${pinned.has(k) ? "  (pinned already)" : ""}`);
        if (pinned.size) console.log(`currently pinned: ${[...pinned].map((k) => describeHostKey(k)).join(", ")}`);
        if (keys.length === pinned.size && keys.every((k) => pinned.has(k))) {
            console.log(`${name}: pins unchanged`);
            continue;
        }
        console.log(`Compare with the host's own console before accepting: ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub (and the other types).`);
        if (!values.yes && !confirm(`Pin these keys for ${name}?`)) {
            console.log(`${name}: not pinned`);
            continue;
        }
        console.log(`${name}: pinned in ${record(stack, cfg, name, keys)}`);
        changed++;
    }
    if (changed) console.log(`next: scripts/pulumi up --stack ${stack} (the store's known_hosts of its peers follows the pins)`);
    return 0;
}

try {
    process.exit(main(process.argv.slice(2)));
} catch (e) {
    console.error(`pin-host: ${(e as Error).message}`);
    process.exit(1);
}
