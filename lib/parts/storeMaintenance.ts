// The IMAP store's maintenance jobs (seed: "Mail box cleanup", the Bayes scripts) and the relay's receiving
// end of the Bayes training. The account administration itself is scripts/mailadmin.ts.
import { fqdnOf, hostsWithRole, StackConfig } from "../config";
import { HostPlan, scriptFile } from "../plan";
import { ACCOUNT_DB } from "../roles/imap";
import { sshFromStore } from "./firewall";

export const MAIL_ROOT = "/var/vmail";
/** Mailboxes of deleted accounts, as <domain>/<localpart>-<UTC time>. */
export const MAILBOX_BACKUP = "/var/vmail-deleted";
export const BAYES_LEARN_USER = "bayes-learn";
const BAYES_PATH = "/var/lib/spamassassin/bayes/bayes";

/** Store side: the daily mailbox cleanup and (with a Bayes key configured) the nightly Bayes collection. */
export function storeMaintenancePart(cfg: StackConfig): Partial<HostPlan> {
    const relays = hostsWithRole(cfg, "relay").map(([name]) => fqdnOf(cfg, name));
    const bayes = cfg.mail.bayesLearnPublicKey !== undefined;
    return {
        packages: ["sqlite3", "openssh-client"],
        directories: [{ path: MAILBOX_BACKUP, mode: "0750", owner: "root", group: "vmail" }],
        files: [
            scriptFile("/usr/local/sbin/mailinfra-mailbox-cleanup", "imap/usr/local/sbin/mailinfra-mailbox-cleanup.ejs", { db: ACCOUNT_DB, mailRoot: MAIL_ROOT, backupRoot: MAILBOX_BACKUP }),
            ...(bayes
                ? [
                      {
                          path: "/root/.ssh/mailinfra-bayes",
                          content: "(rendered from secrets)",
                          secret: true,
                          fromSecrets: { names: ["bayesLearnKey" as const], render: (s: Record<string, string>) => `${s.bayesLearnKey.trim()}\n` },
                          mode: "0600",
                          owner: "root",
                          group: "root",
                      },
                      scriptFile("/usr/local/sbin/mailinfra-bayes-collect", "imap/usr/local/sbin/mailinfra-bayes-collect.ejs", { mailRoot: MAIL_ROOT, relays, learnUser: BAYES_LEARN_USER }),
                  ]
                : []),
        ],
        cron: [
            // output goes to syslog through logger; cron mails only failures' stderr
            { name: "mailinfra-mailbox-cleanup", schedule: "17 4 * * *", user: "root", command: "/usr/local/sbin/mailinfra-mailbox-cleanup >/dev/null" },
            ...(bayes ? [{ name: "mailinfra-bayes-collect", schedule: "47 2 * * *", user: "root", command: "/usr/local/sbin/mailinfra-bayes-collect >/dev/null" }] : []),
        ],
    };
}

/** Relay side: a dedicated user whose only key runs the receiver, which may only run sa-learn as spamd's user. */
export function bayesReceiverPart(cfg: StackConfig): Partial<HostPlan> {
    const key = cfg.mail.bayesLearnPublicKey;
    if (key === undefined) return {};
    const home = `/var/lib/${BAYES_LEARN_USER}`;
    return {
        packages: ["sudo", "spamassassin"],
        users: [{ name: BAYES_LEARN_USER, home, createHome: true, system: true }],
        directories: [{ path: `${home}/.ssh`, mode: "0700", owner: BAYES_LEARN_USER, group: BAYES_LEARN_USER }],
        files: [
            scriptFile("/usr/local/sbin/mailinfra-receive-bayes", "relay/usr/local/sbin/mailinfra-receive-bayes.ejs", { learnUser: BAYES_LEARN_USER, bayesPath: BAYES_PATH }),
            {
                // exactly these two command lines, nothing else
                path: "/etc/sudoers.d/mailinfra-bayes",
                content: `# rendered by mailinfra: the store's Bayes training writes spamd's Bayes DB as its owner\n${BAYES_LEARN_USER} ALL=(debian-spamd) NOPASSWD: /usr/bin/sa-learn --spam --mbox -, /usr/bin/sa-learn --ham --mbox -\n`,
                mode: "0440",
                owner: "root",
                group: "root",
                validate: `visudo -cqf "$NEW"`,
            },
            {
                path: `${home}/.ssh/authorized_keys`,
                content: `restrict,command="/usr/local/sbin/mailinfra-receive-bayes" ${key}\n`,
                mode: "0600",
                owner: BAYES_LEARN_USER,
                group: BAYES_LEARN_USER,
            },
        ],
        ports: [sshFromStore(cfg, "Bayes training")],
    };
}
