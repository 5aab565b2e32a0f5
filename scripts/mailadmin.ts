// mailadmin: account administration on the IMAP store (the seed's wmfmailadmin), over SSH.
//   scripts/mailadmin [--stack lab|prod] <command> ...      (scripts/mailadmin --help)
// Every write is one sqlite3 transaction on the store followed at once by the push of the account DB to the
// relays, so a new account is routable there before this command returns. Passwords travel on stdin only.
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { parseArgs } from "node:util";
import { NodeSSH } from "node-ssh";
import { fqdnOf, hostsWithRole, StackConfig } from "../lib/config";
import { rawStackFile, readStackFile, stackFilePath } from "../lib/stackFile";
import { pinnedHostOptions } from "../provider/ssh";
import {
    ACCOUNT_DB,
    AccountRow,
    Address,
    AdminError,
    changedRows,
    explainSqliteError,
    filterCheckScript,
    filterVerdict,
    formatList,
    formatQuota,
    formatShow,
    leftMessagePath,
    parseAddress,
    parseQuota,
    parseRows,
    renderLeftMessage,
    shellQuote,
    sql,
    storedHash,
    validateFilter,
    validateLeftMessage,
    validatePassword,
    validateRealname,
    USER_LEFT_DIR,
} from "../lib/accounts";

const USAGE = `usage: mailadmin [--stack lab|prod] <command> [args]

  list [domain]                          accounts as a table
  show <address>                         one account
  add <address> [--name NAME] [--quota SIZE] [--password-stdin]
  passwd <address> [--password-stdin]    prompted twice on a terminal, else --password-stdin
  deactivate <address>                   mail is refused / answered by the left message
  reactivate <address>
  delete <address> --yes                 the mailbox is moved to backup by the nightly cleanup
  quota <address> <SIZE>                 KB, or with K/M/G; 0 = unlimited
  filter show <address>
  filter set <address> [FILE|-]          Exim filter text (must start with "# Exim filter")
  filter clear <address>                 back to the default filter
  left-message show|clear <address>
  left-message set <address> [FILE|-]    reply text for mail to the inactive account; plain text,
                                         %address% %localpart% %domain% %name% %postmaster% are filled in

Passwords are never accepted on the command line.`;

interface Store {
    name: string;
    ssh: NodeSSH;
    cfg: StackConfig;
}

/** Structured config straight from Pulumi.<stack>.yaml; the CLI decrypts only the SSH key, and only when no key file is set. */
function readStack(stack: string): { cfg: StackConfig; sshKey?: string } {
    const repo = path.resolve(__dirname, "..");
    if (!fs.existsSync(stackFilePath(repo, stack))) throw new AdminError(`no stack config ${stackFilePath(repo, stack)}`);
    const raw = rawStackFile(repo, stack);
    const cfg = readStackFile(repo, stack);
    if (cfg.ssh.privateKeyPath || !raw["mailinfra:sshPrivateKey"]) return { cfg };
    try {
        const key = execFileSync(path.join(repo, "scripts", "pulumi"), ["config", "get", "mailinfra:sshPrivateKey", "--stack", stack], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
        return { cfg, sshKey: key };
    } catch (e) {
        throw new AdminError(`cannot decrypt mailinfra:sshPrivateKey of stack ${stack}: ${String((e as any).stderr ?? e).trim()}`);
    }
}

async function connect(cfg: StackConfig, stack: string, sshKey: string | undefined): Promise<Store> {
    const [[name, host]] = hostsWithRole(cfg, "imap");
    const ssh = new NodeSSH();
    // passwords go to the store on stdin: only over a connection to its pinned host key
    const pinned = pinnedHostOptions({ host: host.address, name, stack, hostKeys: host.sshHostKeys });
    try {
        await ssh.connect({
            host: host.address,
            port: cfg.ssh.port,
            username: cfg.ssh.user,
            ...(cfg.ssh.privateKeyPath ? { privateKeyPath: cfg.ssh.privateKeyPath } : sshKey ? { privateKey: sshKey } : { agent: process.env.SSH_AUTH_SOCK }),
            readyTimeout: 20000,
            ...pinned.options,
        });
    } catch (e) {
        throw new AdminError(`cannot reach the IMAP store ${fqdnOf(cfg, name)} (${host.address}): ${pinned.explain(e as Error).message}`);
    }
    return { name: fqdnOf(cfg, name), ssh, cfg };
}

async function remote(store: Store, command: string, stdin?: string): Promise<string> {
    const r = await store.ssh.execCommand(command, { stdin });
    if (r.code !== 0) throw new AdminError(r.stderr.trim() || r.stdout.trim() || `${command.split(" ")[0]} failed on ${store.name} (exit ${r.code})`);
    return r.stdout;
}

async function sqlite(store: Store, input: string, a?: Address): Promise<string> {
    const r = await store.ssh.execCommand(`sqlite3 ${ACCOUNT_DB}`, { stdin: input });
    if (r.code !== 0 || /^(Error|Parse error|Runtime error)/m.test(r.stderr)) throw new AdminError(explainSqliteError(r.stderr || r.stdout, a));
    return r.stdout;
}

/** The relays must know the change before we report success (no 550 window for a new account). */
async function push(store: Store): Promise<void> {
    const r = await store.ssh.execCommand("/usr/local/sbin/mailinfra-push-userdb");
    if (r.code !== 0) throw new AdminError(`the change is saved on ${store.name}, but pushing the account DB to the relays failed (the 15-minute cron will retry):\n${(r.stderr || r.stdout).trim()}`);
    for (const line of r.stdout.trim().split("\n").filter(Boolean)) console.log(`  pushed: ${line}`);
}

async function write(store: Store, a: Address, statement: string, what: string, mustExist = true): Promise<void> {
    const n = changedRows(await sqlite(store, statement, a));
    if (mustExist && n === 0) throw new AdminError(`${a.localpart}@${a.domain} does not exist`);
    console.log(`${a.localpart}@${a.domain}: ${what}`);
    await push(store);
}

async function readAllStdin(): Promise<string> {
    const chunks: Buffer[] = [];
    for await (const c of process.stdin) chunks.push(c as Buffer);
    return Buffer.concat(chunks).toString("utf8");
}

function readTextArg(arg: string | undefined): Promise<string> {
    if (arg === undefined || arg === "-") {
        if (process.stdin.isTTY) console.error("(reading from stdin, end with Ctrl-D)");
        return readAllStdin();
    }
    try {
        return Promise.resolve(fs.readFileSync(arg, "utf8"));
    } catch (e) {
        throw new AdminError(`cannot read ${arg}: ${(e as Error).message}`);
    }
}

/** One line from the terminal without echo. */
function promptHidden(question: string): Promise<string> {
    return new Promise((resolve, reject) => {
        const stdin = process.stdin;
        process.stderr.write(question);
        stdin.setRawMode(true);
        stdin.resume();
        let value = "";
        const onData = (buf: Buffer) => {
            for (const ch of buf.toString("utf8")) {
                if (ch === "\r" || ch === "\n") {
                    done();
                    return resolve(value);
                }
                if (ch === "\u0003") {
                    done();
                    return reject(new AdminError("interrupted"));
                }
                if (ch === "\u007f" || ch === "\b") value = value.slice(0, -1);
                else value += ch;
            }
        };
        const done = () => {
            stdin.off("data", onData);
            stdin.setRawMode(false);
            stdin.pause();
            process.stderr.write("\n");
        };
        stdin.on("data", onData);
    });
}

async function readPassword(fromStdin: boolean): Promise<string> {
    if (fromStdin) return validatePassword((await readAllStdin()).replace(/\r?\n$/, ""));
    if (!process.stdin.isTTY) throw new AdminError("no terminal to prompt for the password: use --password-stdin");
    const first = validatePassword(await promptHidden("New password: "));
    if ((await promptHidden("Repeat password: ")) !== first) throw new AdminError("the passwords do not match");
    return first;
}

/** Hashed on the store by openssl from stdin: the cleartext is on no command line and in no file. */
async function hashPassword(store: Store, pw: string): Promise<string> {
    return storedHash(await remote(store, "openssl passwd -6 -stdin", `${pw}\n`));
}

/** Exim itself judges the filter on the store (`exim4 -bf`, sandboxed: lib/accounts.ts filterCheckScript). */
async function checkFilterOnHost(store: Store, a: Address, filter: string): Promise<void> {
    const r = await store.ssh.execCommand(`bash -c ${shellQuote(filterCheckScript(a))}`, { stdin: filter });
    const why = filterVerdict(r.code ?? 1, `${r.stdout}\n${r.stderr}`);
    if (why) throw new AdminError(`Exim on ${store.name} refuses the filter: ${why}`);
}

async function showAccount(store: Store, a: Address): Promise<AccountRow> {
    const [row] = parseRows<AccountRow>(await sqlite(store, sql.show(a)));
    if (!row) throw new AdminError(`${a.localpart}@${a.domain} does not exist`);
    return row;
}

async function readLeftMessage(store: Store, a: Address): Promise<string | null> {
    const r = await store.ssh.execCommand(`cat ${shellQuote(leftMessagePath(a))}`);
    // node-ssh trims the output; the template's last line break is put back
    return r.code === 0 ? `${r.stdout}\n` : null;
}

async function main(argv: string[]): Promise<number> {
    const { values, positionals } = parseArgs({
        args: argv,
        allowPositionals: true,
        options: {
            stack: { type: "string", default: "lab" },
            name: { type: "string" },
            quota: { type: "string" },
            "password-stdin": { type: "boolean", default: false },
            yes: { type: "boolean", default: false },
            help: { type: "boolean", short: "h", default: false },
        },
    });
    const [command, ...args] = positionals;
    if (values.help || !command) {
        console.log(USAGE);
        return values.help ? 0 : 2;
    }
    if (!/^[a-z][a-z0-9-]*$/.test(values.stack!)) throw new AdminError(`invalid stack name "${values.stack}"`);
    const need = (n: number, usage: string) => {
        if (args.length < n) throw new AdminError(`usage: mailadmin ${usage}`);
    };
    // the stack config is local: every argument is checked before the store is contacted
    const { cfg, sshKey } = readStack(values.stack!);
    let store: Store | undefined;
    const open = async () => (store ??= await connect(cfg, values.stack!, sshKey));
    const domains = cfg.mail.localDomains;
    try {
        switch (command) {
            case "list": {
                const domain = args[0]?.toLowerCase();
                if (domain && !domains.includes(domain)) throw new AdminError(`domain "${domain}" is not a local mail domain`);
                process.stdout.write(formatList(parseRows<AccountRow>(await sqlite(await open(), sql.list(domain)))));
                return 0;
            }
            case "show": {
                need(1, "show <address>");
                const a = parseAddress(args[0], domains);
                process.stdout.write(formatShow(await showAccount((await open()), a), await readLeftMessage((await open()), a)));
                return 0;
            }
            case "add": {
                need(1, "add <address> [--name NAME] [--quota SIZE] [--password-stdin]");
                const realname = validateRealname(values.name ?? "");
                const quota = parseQuota(values.quota ?? "0");
                const a = parseAddress(args[0], domains);
                const pw = await readPassword(values["password-stdin"]!);
                await write((await open()), a, sql.add(a, await hashPassword((await open()), pw), realname, quota), `created (quota ${formatQuota(quota)})`, false);
                return 0;
            }
            case "passwd": {
                need(1, "passwd <address> [--password-stdin]");
                const a = parseAddress(args[0], domains);
                await showAccount((await open()), a);
                const pw = await readPassword(values["password-stdin"]!);
                await write((await open()), a, sql.passwd(a, await hashPassword((await open()), pw)), "password changed");
                return 0;
            }
            case "deactivate":
            case "reactivate": {
                need(1, `${command} <address>`);
                const a = parseAddress(args[0], domains);
                await write((await open()), a, sql.setActive(a, command === "reactivate"), command === "reactivate" ? "active" : "inactive");
                return 0;
            }
            case "delete": {
                need(1, "delete <address> --yes");
                if (!values.yes) throw new AdminError("delete needs --yes (the mailbox goes to the backup directory at the next cleanup)");
                const a = parseAddress(args[0], domains);
                await write((await open()), a, sql.remove(a), "deleted (mailbox moves to backup at the next cleanup)");
                return 0;
            }
            case "quota": {
                need(2, "quota <address> <SIZE>");
                const quota = parseQuota(args[1]);
                const a = parseAddress(args[0], domains);
                await write((await open()), a, sql.quota(a, quota), `quota ${formatQuota(quota)}`);
                return 0;
            }
            case "filter": {
                const [sub, addr, file] = args;
                if (!["show", "set", "clear"].includes(sub) || !addr) throw new AdminError("usage: mailadmin filter show|set|clear <address> [FILE|-]");
                if (sub === "set") {
                    const filter = validateFilter(await readTextArg(file));
                    const a = parseAddress(addr, domains);
                    await checkFilterOnHost((await open()), a, filter);
                    await write((await open()), a, sql.filter(a, filter), "filter set");
                } else if (sub === "clear") {
                    const a = parseAddress(addr, domains);
                    await write((await open()), a, sql.filter(a, null), "default filter");
                } else {
                    const a = parseAddress(addr, domains);
                    const row = await showAccount((await open()), a);
                    process.stdout.write(row.filter ?? "(default filter)\n");
                }
                return 0;
            }
            case "left-message": {
                const [sub, addr, file] = args;
                if (!["show", "set", "clear"].includes(sub) || !addr) throw new AdminError("usage: mailadmin left-message show|set|clear <address> [FILE|-]");
                const text = sub === "set" ? validateLeftMessage(await readTextArg(file)) : "";
                const a = parseAddress(addr, domains);
                const row = await showAccount((await open()), a);
                const target = leftMessagePath(a);
                if (sub === "show") process.stdout.write((await readLeftMessage((await open()), a)) ?? "(no left message)\n");
                else if (sub === "clear") {
                    await remote((await open()), `rm -f ${shellQuote(target)}`);
                    console.log(`${a.localpart}@${a.domain}: left message removed`);
                } else {
                    // written next to the target and renamed: Exim never reads a half-written template
                    const dir = path.posix.dirname(target);
                    await remote(
                        (await open()),
                        `install -d -m 0755 ${shellQuote(USER_LEFT_DIR)} ${shellQuote(dir)} && t=$(mktemp ${shellQuote(dir)}/.new.XXXXXX) && cat > "$t" && chmod 0644 "$t" && mv -f "$t" ${shellQuote(target)}`,
                        renderLeftMessage(text, { address: `${a.localpart}@${a.domain}`, localpart: a.localpart, domain: a.domain, name: row.realname ?? "", postmaster: cfg.mail.postmaster }),
                    );
                    console.log(`${a.localpart}@${a.domain}: left message set (${target}; used while the account is inactive)`);
                }
                return 0;
            }
            default:
                throw new AdminError(`unknown command "${command}"\n${USAGE}`);
        }
    } finally {
        (store as Store | undefined)?.ssh.dispose();
    }
}

main(process.argv.slice(2))
    .then((code) => process.exit(code))
    .catch((e) => {
        if (e instanceof AdminError || (e as any)?.code?.startsWith?.("ERR_PARSE_ARGS")) console.error(`mailadmin: ${e.message}`);
        else if ((e as any)?.name === "ConfigError") console.error(`mailadmin: ${e.message}`);
        else console.error(`mailadmin: ${(e as Error).stack ?? e}`);
        process.exit(1);
    });
