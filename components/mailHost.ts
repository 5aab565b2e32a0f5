// One host of the fleet: turns a pure HostPlan into provider resources in a safe order
// (packages → users/groups → directories/mounts → files (checked) → steps → services).
import * as pulumi from "@pulumi/pulumi";
import { cronFile, FileSpec, HostPlan, SecretName } from "../lib/plan";
import { sha256 } from "../lib/hash";
import { ConnectionArgs, Packages, RemoteFile, Script } from "./remote";

export interface MailHostArgs {
    plan: HostPlan;
    connection: pulumi.Input<ConnectionArgs>;
    /** Named stack secrets the plan's files and steps may use. */
    secrets: Partial<Record<SecretName, pulumi.Input<string>>>;
    /** Resources of other hosts that steps marked after "peers" wait for. */
    peers?: pulumi.Resource[];
}

const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

export class MailHost extends pulumi.ComponentResource {
    public readonly files: Record<string, RemoteFile> = {};
    public readonly ready: pulumi.Resource[];
    public readonly role: string;

    constructor(name: string, args: MailHostArgs, opts?: pulumi.ComponentResourceOptions) {
        super("mailinfra:fleet:MailHost", name, { role: args.plan.role }, opts);
        const { plan, connection } = args;
        this.role = plan.role;
        const child = (deps: pulumi.Resource[] = []): pulumi.CustomResourceOptions => ({ parent: this, dependsOn: deps });
        const id = (suffix: string) => `${name}${suffix.startsWith("/") ? "" : ":"}${suffix}`;

        const packages = new Packages(id("packages"), { connection, packages: plan.packages, debconf: plan.debconf }, child());

        const users = plan.users.map(
            (u) =>
                new Script(
                    id(`user:${u.name}`),
                    {
                        connection,
                        create: `id -u ${q(u.name)} >/dev/null 2>&1 || adduser --quiet --system --home ${q(u.home)} ${u.createHome ? "" : "--no-create-home"} ${u.group ? `--ingroup ${q(u.group)}` : "--group"} --shell ${u.createHome ? "/bin/sh" : "/usr/sbin/nologin"} --disabled-password ${q(u.name)}`,
                    },
                    child([packages]),
                ),
        );
        const memberships = plan.groupMemberships.map(
            (m) =>
                new Script(
                    id(`group:${m.group}:${m.user}`),
                    {
                        connection,
                        create: `id -nG ${q(m.user)} | tr ' ' '\\n' | grep -qx ${q(m.group)} || adduser --quiet ${q(m.user)} ${q(m.group)}`,
                        delete: `deluser --quiet ${q(m.user)} ${q(m.group)} || true`,
                    },
                    child([packages, ...users]),
                ),
        );
        const accounts = [packages, ...users, ...memberships];

        const directories = plan.directories.map(
            (d) =>
                new Script(
                    id(d.path),
                    { connection, create: `install -d -m ${q(d.mode)} -o ${q(d.owner)} -g ${q(d.group)} ${q(d.path)}` },
                    child(accounts),
                ),
        );
        const mounts = plan.mounts.map((m) => {
            const fstabMatch = `^tmpfs[[:space:]]+${m.path}[[:space:]]`;
            return new Script(
                id(`tmpfs:${m.path}`),
                {
                    connection,
                    create: [
                        `install -d ${q(m.path)}`,
                        `line="tmpfs ${m.path} tmpfs size=${m.size},mode=${m.mode},uid=$(id -u ${q(m.owner)}),gid=$(getent group ${q(m.group)} | cut -d: -f3),nodev,nosuid 0 0"`,
                        `grep -vE ${q(fstabMatch)} /etc/fstab > /etc/fstab.mailinfra || true`,
                        `echo "$line" >> /etc/fstab.mailinfra && mv /etc/fstab.mailinfra /etc/fstab`,
                        `if mountpoint -q ${q(m.path)}; then mount -o remount ${q(m.path)}; else mount ${q(m.path)}; fi`,
                    ].join("\n"),
                    delete: `umount ${q(m.path)} || true\nsed -i -E ${q(`\|${fstabMatch}|d`)} /etc/fstab`,
                },
                child(accounts),
            );
        });
        const layout = [...accounts, ...directories, ...mounts];

        const cronFiles: FileSpec[] = plan.cron.map(cronFile);
        const contentOf: Record<string, pulumi.Input<string>> = {};
        for (const f of [...plan.files, ...cronFiles]) {
            const fromSecrets = f.fromSecrets;
            let content: pulumi.Input<string> = f.secret ? pulumi.secret(f.content) : f.content;
            if (fromSecrets) {
                const missing = fromSecrets.names.filter((n) => args.secrets[n] === undefined);
                if (missing.length) throw new Error(`${name}: ${f.path} needs the secret(s) ${missing.map((m) => `mailinfra:${m}`).join(", ")}`);
                const inputs = Object.fromEntries(fromSecrets.names.map((n) => [n, args.secrets[n]!]));
                content = pulumi.secret(pulumi.all(inputs).apply((v) => fromSecrets.render(v as Record<string, string>)));
            }
            contentOf[f.path] = content;
            const required = (f.requires ?? []).map((r) => {
                const dep = this.files[r];
                if (!dep) throw new Error(`${name}: ${f.path} requires ${r}, which must be planned before it`);
                return dep;
            });
            this.files[f.path] = new RemoteFile(
                id(f.path),
                {
                    connection,
                    path: f.path,
                    content,
                    mode: f.mode,
                    owner: f.owner,
                    group: f.group,
                    validate: f.validate,
                    keepOnDelete: f.keepOnDelete,
                },
                child([...layout, ...required]),
            );
        }
        const files = Object.values(this.files);

        const steps: pulumi.Resource[] = [];
        for (const s of plan.steps) {
            const deps = [...(s.after.includes("files") ? [...layout, ...files, ...steps] : layout), ...(s.after.includes("peers") ? args.peers ?? [] : [])];
            const stdin = s.secretStdin ? args.secrets[s.secretStdin] : undefined;
            if (s.secretStdin && stdin === undefined) throw new Error(`${name}: step ${s.name} needs secret ${s.secretStdin}`);
            steps.push(new Script(id(`step:${s.name}`), { connection, create: s.script, stdin: stdin && pulumi.secret(stdin) }, child(deps)));
        }

        // A service is reloaded exactly when one of the files it reads changed (their hashes are its triggers).
        const services = plan.services.map((svc) => {
            // secret files: the hash of what is really deployed (so a rotated key restarts the daemon), kept secret in state
            const inputs = plan.files
                .filter((f) => f.notify?.includes(svc.name))
                .map((f) => (f.secret || f.fromSecrets ? pulumi.secret(pulumi.output(contentOf[f.path]).apply((c) => `${f.path}=${sha256(c)}`)) : `${f.path}=${sha256(f.content)}`));
            const cmd = `systemctl daemon-reload\nsystemctl enable --quiet ${q(svc.name)}\nsystemctl ${svc.onChange} ${q(svc.name)}\nsystemctl is-active --quiet ${q(svc.name)}`;
            return new Script(id(`service:${svc.name}`), { connection, create: cmd, triggers: inputs }, child([...layout, ...files, ...steps]));
        });

        this.ready = [...layout, ...files, ...steps, ...services];
        this.registerOutputs({});
    }
}
