// Text from operators is data: every config key whose value reaches a rendered file or crontab refuses values
// that could add lines or break quoting, with a problem naming the key; free text stays inert where it lands.
import { describe, expect, it } from "vitest";
import { parseStackConfig } from "../../lib/config";
import { renderedFiles } from "../../lib/review";
import { planFleet } from "../../lib/roles";
import { submissionSenders } from "../../lib/roles/imap";
import { checkSubmissionRateLimit } from "../../lib/status";
import { labWith, problemsOf } from "./stackConfig";

const HOSTILE = ["\n", '"', "'", "${", "\\", ";", "\0"];

/** key as reported → how to put a value there (a valid value is given, the hostile text is appended to it). */
const KEYS: [string, (c: any, v: string) => void][] = [
    ["mailinfra:hosts.sanger.fqdn", (c, v) => (c.hosts.sanger.fqdn = `sanger.lab.test${v}`)],
    ["mailinfra:mail.hostDomain", (c, v) => (c.mail.hostDomain = `lab.test${v}`)],
    ["mailinfra:mail.ownNetworks[0]", (c, v) => (c.mail.ownNetworks = [`198.51.100.8/29${v}`])],
    ["mailinfra:mail.localDomains[3]", (c, v) => c.mail.localDomains.push(`extra.test${v}`)],
    ["mailinfra:mail.relayDomains[0]", (c, v) => (c.mail.relayDomains = [`relayed.test${v}`])],
    ["mailinfra:mail.legacyMailmanDomains[0]", (c, v) => (c.mail.legacyMailmanDomains = [`wikipedia.test${v}`])],
    ["mailinfra:mail.rtDomains[0]", (c, v) => (c.mail.rtDomains = [`rt.wikimedia.test${v}`])],
    ["mailinfra:mail.aliases", (c, v) => (c.mail.aliases[`wikimedia.test${v}`] = { x: ["noc"] })],
    ["mailinfra:mail.aliases.wikimedia.test", (c, v) => (c.mail.aliases["wikimedia.test"][`x${v}`] = ["noc"])],
    ["mailinfra:mail.aliases.wikimedia.test.noc[0]", (c, v) => (c.mail.aliases["wikimedia.test"].noc = [`smoke${v}`])],
    ["mailinfra:mail.aliases.wikimedia.test.archive[0]", (c, v) => (c.mail.aliases["wikimedia.test"].archive = [`|/usr/bin/logger -t x${v}`])],
    ["mailinfra:mail.postmaster", (c, v) => (c.mail.postmaster = `noc@wikimedia.test${v}`)],
    ["mailinfra:mail.userdbSyncPublicKey", (c, v) => (c.mail.userdbSyncPublicKey += v)],
    ["mailinfra:mail.bayesLearnPublicKey", (c, v) => (c.mail.bayesLearnPublicKey += v)],
    ["mailinfra:mail.submission.accountLimits", (c, v) => (c.mail.submission = { accountLimits: { [`smoke@wikimedia.test${v}`]: 5 } })],
    ["mailinfra:lists.domain", (c, v) => (c.lists.domain = `lists.wikimedia.test${v}`)],
    ["mailinfra:lists.lists[0].name", (c, v) => (c.lists.lists[0].name += v)],
    ["mailinfra:lists.lists[0].owner", (c, v) => (c.lists.lists[0].owner += v)],
    ["mailinfra:lists.lists[0].members[0]", (c, v) => (c.lists.lists[0].members[0] += v)],
    ["mailinfra:lists.web.hostnames[0]", (c, v) => (c.lists.web = { hostnames: [`lists.lab.test${v}`] })],
    ["mailinfra:tls.certificate", (c, v) => (c.tls.certificate = c.tls.certificate.replace("-----END", `${v}\n-----END`))],
    ["mailinfra:relay.wikiHelo", (c, v) => (c.relay.wikiHelo += v)],
    ["mailinfra:relay.wikiSender", (c, v) => (c.relay.wikiSender += v)],
    ["mailinfra:relay.wikiInterface", (c, v) => (c.relay.wikiInterface += v)],
    ["mailinfra:relay.internalSenderDomain", (c, v) => (c.relay.internalSenderDomain += v)],
    ["mailinfra:relay.internalSenderRewrite", (c, v) => (c.relay.internalSenderRewrite += v)],
    ["mailinfra:relay.ldap.servers[0]", (c, v) => (c.relay.ldap.servers[0] += v)],
    ["mailinfra:relay.ldap.peopleDn", (c, v) => (c.relay.ldap.peopleDn += v)],
    ["mailinfra:relay.ldap.bindDn", (c, v) => (c.relay.ldap.bindDn += v)],
    ["mailinfra:relay.ldap.googleSmarthost", (c, v) => (c.relay.ldap.googleSmarthost += v)],
    ["mailinfra:relay.ldap.domains[0]", (c, v) => (c.relay.ldap.domains[0] += v)],
    ["mailinfra:relay.otrs.servers[0]", (c, v) => (c.relay.otrs.servers[0] += v)],
    ["mailinfra:relay.otrs.database", (c, v) => (c.relay.otrs.database += v)],
    ["mailinfra:relay.otrs.user", (c, v) => (c.relay.otrs.user += v)],
    ["mailinfra:relay.otrs.domains[0]", (c, v) => (c.relay.otrs.domains[0] += v)],
    ["mailinfra:relay.legacyMailingLists[0]", (c, v) => (c.relay.legacyMailingLists[0] += v)],
    ["mailinfra:relay.listsDomain", (c, v) => (c.relay.listsDomain += v)],
    ["mailinfra:relay.resolverForwarders[0]", (c, v) => (c.relay.resolverForwarders[0] += v)],
    ["mailinfra:relay.resolverReservedZonesInUse[0]", (c, v) => (c.relay.resolverReservedZonesInUse[0] += v)],
    ["mailinfra:tickets.otrs.queueAddresses[0].address", (c, v) => (c.tickets.otrs.queueAddresses[0].address += v)],
    ["mailinfra:tickets.otrs.queueAddresses[0].name", (c, v) => (c.tickets.otrs.queueAddresses[0].name += v)],
    ["mailinfra:tickets.otrs.queueAddresses[0].queue", (c, v) => (c.tickets.otrs.queueAddresses[0].queue = `Misc${v}`)],
    ["mailinfra:tickets.rt.queues[0]", (c, v) => (c.tickets.rt.queues[0] += v)],
    ["mailinfra:backup.schedule", (c, v) => (c.backup.schedule = `17 3 * * *${v}`)],
    ["mailinfra:backup.targetHost", (c, v) => (c.backup.targetHost += v)],
    ["mailinfra:backup.publicKey", (c, v) => (c.backup.publicKey += v)],
    ["mailinfra:smoke.account", (c, v) => (c.smoke.account += v)],
];

describe("hostile values in config keys that reach a file", () => {
    it("the lab stack is valid before the hostile values go in", () => expect(problemsOf(labWith(() => {}))).toEqual([]));
    for (const [key, set] of KEYS)
        it.each(HOSTILE.map((h) => [JSON.stringify(h), h]))(`${key} refuses %s`, (_, h) => {
            const problems = problemsOf(labWith((c) => set(c, h)));
            expect(problems.some((p) => p.startsWith(`${key}:`) || p.startsWith(`${key}.`)), `${key} with ${JSON.stringify(h)}: ${problems.join(" | ")}`).toBe(true);
        });

    it("backup.schedule: a newline with environment lines never reaches root's crontab", () =>
        expect(problemsOf(labWith((c) => (c.backup.schedule = "17 3 * *\nBASH_ENV=/tmp/x")))).toEqual([expect.stringMatching(/^mailinfra:backup.schedule: /)]));
    it("backup.schedule accepts the usual forms", () => {
        for (const s of ["17 3 * * *", "*/30 1-5 * * mon-fri", "@daily"]) expect(problemsOf(labWith((c) => (c.backup.schedule = s)))).toEqual([]);
    });
});

describe("free text stays inert where it lands", () => {
    const localCf = (rules: string) => renderedFiles(planFleet(parseStackConfig(labWith((c) => (c.relay.spam.customRules = rules)))).find((p) => p.host === "mchenry")!)["etc/spamassassin/local.cf"];
    it("relay.spam.customRules: quotes, ${, backslashes and ; inside a rule are rendered verbatim on the rule's line", () => {
        const rule = `header   T_X Subject =~ /a"b'c\\$\\{d\\\\e;f/`;
        const text = localCf(`${rule}\nscore T_X 1.0\n`);
        expect(text.split("\n")).toContain(rule);
    });
    it.each([
        ["loadplugin", "loadplugin Evil /tmp/evil.pm", /directive "loadplugin" is not allowed/],
        ["include", "include /etc/shadow", /directive "include" is not allowed/],
        ["a *_path option", "bayes_path /tmp/b", /directive "bayes_path" is not allowed/],
        ["code in a regex", "body T_X /(?{ system('id') })/", /code in a regular expression/],
        ["a NUL", "score T_X 1\0", /control character/],
        ["a carriage return", "score T_X 1\r", /control character/],
    ])("relay.spam.customRules refuses %s", (_, rules, msg) => {
        const problems = problemsOf(labWith((c) => (c.relay.spam.customRules = rules)));
        expect(problems.some((p) => p.startsWith("mailinfra:relay.spam.customRules:") && msg.test(p)), problems.join(" | ")).toBe(true);
    });
    it(":fail: text keeps its quote and semicolon on its alias line", () => {
        const cfg = parseStackConfig(labWith((c) => (c.mail.aliases["wikimedia.test"].dead = [":fail: it's gone; sorry"])));
        const file = renderedFiles(planFleet(cfg).find((p) => p.host === "mchenry")!)["etc/exim4/aliases/wikimedia.test"];
        expect(file.split("\n")).toContain("dead: :fail: it's gone; sorry");
    });
    it("a pipe alias is quoted and cannot carry a quote of its own", () => {
        const cfg = parseStackConfig(labWith(() => {}));
        const file = renderedFiles(planFleet(cfg).find((p) => p.host === "mchenry")!)["etc/exim4/aliases/wikimedia.test"];
        expect(file.split("\n")).toContain('archive: "|/usr/bin/logger -t mailinfra-archive"');
    });
});

describe("submission senders", () => {
    it("an account may send as the aliases that point to it (one level, no catch-all)", () => {
        const senders = submissionSenders(parseStackConfig(labWith(() => {})));
        expect(senders["smoke@wikimedia.test"]).toEqual(["noc@wikimedia.test"]);
        expect(senders["noc@wikimedia.test"]).toEqual(["abuse@wikimedia.test"]);
        expect(Object.values(senders).flat()).not.toContain("*@wikiquote.test");
    });
    it("per-account limits must be local addresses", () =>
        expect(problemsOf(labWith((c) => (c.mail.submission = { accountLimits: { "a@example.org": 3 } })))).toEqual([
            "mailinfra:mail.submission.accountLimits: a@example.org is not in a local domain",
        ]));
});

describe("submission rate limit in status", () => {
    const cfg = parseStackConfig(labWith(() => {}));
    it("is ok when no account was deferred, naming the limits", () =>
        expect(checkSubmissionRateLimit("sanger", "", cfg)).toEqual({ host: "sanger", check: "submission rate limit", verdict: "ok", detail: "no account over its limit in today's log (100/h per account, 1 override(s))" }));
    it("names the accounts the store deferred; a burst stays ok", () =>
        expect(checkSubmissionRateLimit("sanger", "td-limited@wikimedia.test:2,", cfg)).toMatchObject({ verdict: "ok", detail: "deferred for rate today (100/h per account, 1 override(s)): td-limited@wikimedia.test 2x" }));
    it("warns about an account deferred again and again (a stolen password looks like this)", () =>
        expect(checkSubmissionRateLimit("sanger", "a@wikimedia.test:1,b@wikimedia.test:25,", cfg)).toMatchObject({ verdict: "warn", detail: expect.stringContaining("b@wikimedia.test 25x") }));
});
