// Daily backups of the IMAP store (mailboxes + account DB) to another host of the stack, and the
// restore command. The store side is merged into the imap role; the receiving side (a forced-command
// rrsync key, dated hard-linked snapshots, retention) goes onto the configured target host.
import { fqdnOf, StackConfig } from "../config";
import { HostPlan, scriptFile, StepSpec } from "../plan";
import { ACCOUNT_DB } from "../roles/imap";
import { sshFromStore } from "./firewall";

export const BACKUP_USER = "mailinfra-backup";
export const BACKUP_DIR = "/var/backups/mailinfra";
/** Written by the store after every successful backup: "<snapshot> <method> <target>". */
export const BACKUP_STAMP = "/var/lib/mailinfra/backup-last";

/** The store: backup and restore scripts, the backup key, the daily cron. Empty without mailinfra:backup. */
export function backupPart(cfg: StackConfig): Partial<HostPlan> {
    const b = cfg.backup;
    if (!b) return {};
    const data = { target: fqdnOf(cfg, b.targetHost), targetUser: BACKUP_USER, keepDays: b.keepDays, accountDb: ACCOUNT_DB };
    return {
        packages: ["rsync", "openssh-client", "sqlite3"],
        files: [
            {
                path: "/root/.ssh/mailinfra-backup",
                content: "(rendered from secrets)",
                secret: true,
                fromSecrets: { names: ["backupKey"], render: (s) => `${s.backupKey.trim()}\n` },
                mode: "0600",
                owner: "root",
                group: "root",
            },
            scriptFile("/usr/local/sbin/mailinfra-backup", "imap/usr/local/sbin/mailinfra-backup.ejs", data),
            scriptFile("/usr/local/sbin/mailinfra-restore", "imap/usr/local/sbin/mailinfra-restore.ejs", data),
        ],
        cron: [{ name: "mailinfra-backup", schedule: b.schedule, user: "root", command: "/usr/local/sbin/mailinfra-backup >/dev/null" }],
    };
}

/**
 * Cold failover in one `pulumi up`: a store that holds no account (the smoke account aside) restores the
 * latest finished backup before its account DB is first pushed to the relays, so they never get an empty
 * copy (that would be a 550 for every user until a manual restore). It runs when the step is created
 * (a new or rebuilt store) and never touches a store that has accounts. The backup host is converged
 * first ("peers"), so an unreachable backup is an error, not an empty start.
 */
export function restoreOnRebuildStep(cfg: StackConfig): StepSpec[] {
    const b = cfg.backup;
    if (!b?.restoreOnRebuild) return [];
    const target = fqdnOf(cfg, b.targetHost);
    const smoke = cfg.smoke.enabled ? cfg.smoke.account.toLowerCase() : "";
    return [
        {
            name: "restore-on-rebuild",
            after: ["files", "peers"],
            script: [
                `accounts=$(sqlite3 ${ACCOUNT_DB} "SELECT count(*) FROM account WHERE lower(localpart || '@' || domain) <> '${smoke}';")`,
                `if [ "$accounts" -gt 0 ]; then echo "restore-on-rebuild: the store has $accounts account(s): nothing restored"; exit 0; fi`,
                `errors=$(mktemp)`,
                `trap 'rm -f "$errors"' EXIT`,
                `if ! snapshots=$(/usr/local/sbin/mailinfra-restore --list 2>"$errors"); then`,
                `    echo "restore-on-rebuild: cannot list the backups on ${target}: $(cat "$errors")" >&2`,
                `    echo "An empty store must not go live while a backup of it may exist (the relays would reject every user)." >&2`,
                `    echo "Fix the backup host, or set mailinfra:backup.restoreOnRebuild to false to start with an empty store." >&2`,
                `    exit 1`,
                `fi`,
                // only snapshot names count (ssh may print a host-key notice)
                `latest=$(printf '%s\\n' "$snapshots" | grep -E '^[0-9]{8}T[0-9]{6}Z$' | sed -n 1p || true)`,
                `if [ -z "$latest" ]; then echo "restore-on-rebuild: no backup on ${target} yet: a new store starts empty"; exit 0; fi`,
                `echo "restore-on-rebuild: empty store, restoring $latest from ${target}"`,
                `/usr/local/sbin/mailinfra-restore "$latest"`,
            ].join("\n"),
        },
    ];
}

/** The backup target: a user whose only key may run rrsync into BACKUP_DIR (plus begin/finish/list). */
export function backupReceiverPart(cfg: StackConfig, host: string): Partial<HostPlan> {
    const b = cfg.backup;
    if (!b || b.targetHost !== host) return {};
    const home = `/var/lib/${BACKUP_USER}`;
    return {
        // rrsync (in Debian's rsync package) is a python3 script
        packages: ["rsync", "python3"],
        users: [{ name: BACKUP_USER, home, createHome: true, system: true }],
        directories: [
            { path: `${home}/.ssh`, mode: "0700", owner: BACKUP_USER, group: BACKUP_USER },
            { path: BACKUP_DIR, mode: "0700", owner: BACKUP_USER, group: BACKUP_USER },
        ],
        files: [
            scriptFile("/usr/local/sbin/mailinfra-backup-receive", "backup/usr/local/sbin/mailinfra-backup-receive.ejs", { dir: BACKUP_DIR, keepDays: b.keepDays }),
            {
                path: `${home}/.ssh/authorized_keys`,
                content: `restrict,command="/usr/local/sbin/mailinfra-backup-receive" ${b.publicKey}\n`,
                mode: "0600",
                owner: BACKUP_USER,
                group: BACKUP_USER,
            },
        ],
        ports: [sshFromStore(cfg, "backups and restores")],
    };
}

/** Adds the receiving side to the plan of the backup target host (any role). */
export function withBackupReceiver(cfg: StackConfig, plan: HostPlan): HostPlan {
    const part = backupReceiverPart(cfg, plan.host);
    if (!part.files) return plan;
    const paths = new Set([...plan.files.map((f) => f.path), ...plan.directories.map((d) => d.path)]);
    for (const p of [...part.files.map((f) => f.path), ...part.directories!.map((d) => d.path)])
        if (paths.has(p)) throw new Error(`plan for ${plan.host}: ${p} is managed twice (backup target)`);
    // a shallow merge: file specs carry functions (fromSecrets) that a deep clone would drop
    return {
        ...plan,
        packages: [...new Set([...plan.packages, ...part.packages!])].sort(),
        users: [...plan.users, ...part.users!],
        directories: [...plan.directories, ...part.directories!],
        files: [...plan.files, ...part.files],
        ports: [...plan.ports, ...part.ports!],
    };
}
