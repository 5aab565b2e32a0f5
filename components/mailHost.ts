// One host of the fleet: turns a pure HostPlan into provider resources in a safe order
// (packages → users/groups → directories/mounts → files (checked) → steps → services).
import * as pulumi from "@pulumi/pulumi";
import { cronFile, FileSpec, HostPlan, SecretName } from "../lib/plan";
import { sha256 } from "../lib/hash";
import { directoryScript, HostScript, membershipScript, mountScript, serviceScript, userScript } from "../lib/hostScripts";
import { ConnectionArgs, Packages, RemoteFile, Script } from "./remote";

export interface MailHostArgs {
    plan: HostPlan;
    connection: pulumi.Input<ConnectionArgs>;
    /** Named stack secrets the plan's files and steps may use. */
    secrets: Partial<Record<SecretName, pulumi.Input<string>>>;
    /** Resources of other hosts that steps marked after "peers" wait for. */
    peers?: pulumi.Resource[];
    /** Install ids of those hosts: a re-imaged peer re-runs the steps that feed it (e.g. the account-DB push). */
    peerInstallIds?: pulumi.Input<string>[];
}

export class MailHost extends pulumi.ComponentResource {
    public readonly files: Record<string, RemoteFile> = {};
    public readonly ready: pulumi.Resource[];
    public readonly role: string;
    /** Changes when the host is re-imaged (see Packages.installId). */
    public readonly installId: pulumi.Output<string>;

    constructor(name: string, args: MailHostArgs, opts?: pulumi.ComponentResourceOptions) {
        super("mailinfra:fleet:MailHost", name, { role: args.plan.role }, opts);
        const { plan, connection } = args;
        this.role = plan.role;
        const child = (deps: pulumi.Resource[] = []): pulumi.CustomResourceOptions => ({ parent: this, dependsOn: deps });
        const id = (suffix: string) => `${name}${suffix.startsWith("/") ? "" : ":"}${suffix}`;

        const packages = new Packages(id("packages"), { connection, packages: plan.packages, debconf: plan.debconf }, child());

        const script = (name: string, h: HostScript, deps: pulumi.Resource[]) =>
            new Script(id(name), { connection, create: h.create, delete: h.delete, probe: h.probe }, child(deps));
        const users = plan.users.map((u) => script(`user:${u.name}`, userScript(u), [packages]));
        const memberships = plan.groupMemberships.map((m) => script(`group:${m.group}:${m.user}`, membershipScript(m), [packages, ...users]));
        const accounts = [packages, ...users, ...memberships];

        const directories = plan.directories.map((d) => script(d.path, directoryScript(d), accounts));
        const mounts = plan.mounts.map((m) => script(`tmpfs:${m.path}`, mountScript(m), accounts));
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
            const triggers = s.after.includes("peers") && args.peerInstallIds?.length ? args.peerInstallIds : undefined;
            steps.push(new Script(id(`step:${s.name}`), { connection, create: s.script, stdin: stdin && pulumi.secret(stdin), triggers }, child(deps)));
        }

        // A service is reloaded exactly when one of the files it reads changed (their hashes are its triggers), or
        // when refresh finds one of them not as declared (its probe checks them: the repair reloads the service).
        const services = plan.services.map((svc) => {
            // secret files: the hash of what is really deployed (so a rotated key restarts the daemon), kept secret in state
            const reads = plan.files.filter((f) => f.notify?.includes(svc.name));
            const inputs = reads.map((f) => (f.secret || f.fromSecrets ? pulumi.secret(pulumi.output(contentOf[f.path]).apply((c) => `${f.path}=${sha256(c)}`)) : `${f.path}=${sha256(f.content)}`));
            const h = serviceScript(svc);
            const probe = pulumi.all(inputs).apply((r) => serviceScript(svc, r as string[]).probe);
            return new Script(
                id(`service:${svc.name}`),
                { connection, create: h.create, triggers: inputs, probe: reads.some((f) => f.secret || f.fromSecrets) ? pulumi.secret(probe) : probe },
                child([...layout, ...files, ...steps]),
            );
        });

        this.ready = [...layout, ...files, ...steps, ...services];
        this.installId = packages.installId;
        this.registerOutputs({});
    }
}
