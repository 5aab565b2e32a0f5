import { describe, expect, it } from "vitest";
import { ConfigError, parseStackConfig } from "../../lib/config";
import { planHost } from "../../lib/roles";
import { listsStepScript, secondaryRelayDomains } from "../../lib/roles/lists";
import { stackConfig } from "./stackConfig";

function labWith(mutate: (c: any) => void) {
    const c = structuredClone(stackConfig("lab")) as any;
    mutate(c);
    return c;
}

function problemsOf(raw: Record<string, unknown>): string[] {
    try {
        parseStackConfig(raw);
    } catch (e) {
        if (e instanceof ConfigError) return e.problems;
        throw e;
    }
    return [];
}

const lab = () => parseStackConfig(stackConfig("lab"));
const fileOf = (host: string, p: string) => planHost(lab(), host).files.find((f) => f.path === p)!.content;

/** One named ACL of an Exim config, up to the next blank line. */
function acl(conf: string, name: string): string {
    const m = new RegExp(`^${name}:\\n[\\s\\S]*?(?=\\n\\n)`, "m").exec(conf);
    if (!m) throw new Error(`no ACL ${name}`);
    return m[0];
}

describe("lists host plan", () => {
    it("gives lily the relay's DATA and spam ACLs and connect ACL from the same partials, word for word", () => {
        const relay = fileOf("mchenry", "/etc/exim4/exim4.conf");
        const lily = fileOf("lily", "/etc/exim4/exim4.conf");
        for (const name of ["acl_check_data", "spamassassin"]) expect(acl(lily, name)).toBe(acl(relay, name));
        expect(lily).toContain("spamd_address = 127.0.0.1 783");
        expect(fileOf("lily", "/etc/exim4/system_filter")).toBe(fileOf("mchenry", "/etc/exim4/system_filter"));
        expect(fileOf("lily", "/etc/spamassassin/local.cf")).toBe(fileOf("mchenry", "/etc/spamassassin/local.cf"));
    });

    it("relays for every domain the relay is primary for, and routes @mx_secondary domains only to the allowed primaries", () => {
        const cfg = lab();
        expect(secondaryRelayDomains(cfg)).toEqual(["rt.wikimedia.test", "wikimedia.test", "wikipedia.test", "wikiquote.test"]);
        const lily = fileOf("lily", "/etc/exim4/exim4.conf");
        expect(lily).toMatch(/^hostlist primary_mx = 198\.51\.100\.11$/m);
        expect(lily).toMatch(/secondary:\n  driver = dnslookup\n  domains = ! \+relay_domains : \+secondary_domains\n[\s\S]*?ignore_target_hosts = ! \+primary_mx\n[\s\S]*?no_more/);
        expect(lily).toContain("verify = recipient/callout=10s,connect=5s,maxwait=30s,defer_ok");
        const withPrimaries = planHost(parseStackConfig(labWith((c) => (c.lists.primaryMx = ["192.0.2.1", "192.0.2.2"]))), "lily");
        expect(withPrimaries.files.find((f) => f.path === "/etc/exim4/exim4.conf")!.content).toMatch(/^hostlist primary_mx = 192\.0\.2\.1 : 192\.0\.2\.2$/m);
    });

    it("creates missing lists and syncs each list's members to the config, with quoted arguments", () => {
        const script = listsStepScript(lab());
        expect(script).toContain("grep -qixF 'wikien-l@lists.wikimedia.test' <<<\"$existing\" || mm create --owner 'noc@wikimedia.test' 'wikien-l@lists.wikimedia.test'");
        expect(script).toContain("printf '%s\\n' 'alice@example.net' 'bob@example.org' | mm syncmembers --no-welcome-msg --no-goodbye-msg --no-admin-notify - 'wikien-l@lists.wikimedia.test'");
        // the relay's legacy rewrite target: the old address is an acceptable alias (no implicit-destination hold)
        expect(script).toMatch(/'a\.add\("foundation-l@wikipedia\.test"\)' 'commit\(\)' \| mm_python 'foundation-l@lists\.wikimedia\.test'/);
        expect(planHost(lab(), "lily").steps.map((s) => s.name)).toEqual(["mailman-lists"]);
    });

    it("points Mailman at Exim (LMTP in on 8024, SMTP out on 25) with the prototype archive and no REST listener", () => {
        const cfg = fileOf("lily", "/etc/mailman3/mailman.cfg");
        expect(cfg).toMatch(/^incoming: mailman\.mta\.exim4\.LMTP$/m);
        expect(cfg).toMatch(/^lmtp_port: 8024$/m);
        expect(cfg).toMatch(/\[archiver\.prototype\]\nenable: yes/);
        expect(cfg).toMatch(/\[runner\.rest\]\nstart: no/);
        expect(cfg).not.toMatch(/admin_pass/);
    });
});

describe("lists config", () => {
    it("names a list given twice", () => {
        expect(problemsOf(labWith((c) => c.lists.lists.push({ name: "wikien-l", owner: "noc@wikimedia.test" })))).toEqual(["mailinfra:lists.lists: list wikien-l is given twice"]);
    });

    it("needs a lists domain for lists, and the relay's rewrite target must be that domain", () => {
        expect(problemsOf(labWith((c) => ((c.relay.legacyMailingLists = []), delete c.relay.listsDomain)))).toEqual([
            "mailinfra:lists.domain: lists are configured but there is no lists domain (set lists.domain or relay.listsDomain)",
        ]);
        expect(problemsOf(labWith((c) => (c.lists.domain = "lists.wikipedia.test")))).toEqual([
            "mailinfra:lists.domain: lists.wikipedia.test differs from relay.listsDomain lists.wikimedia.test (the relay rewrites legacy list addresses there)",
        ]);
    });

    it("names a bad member address and a bad list name", () => {
        expect(problemsOf(labWith((c) => (c.lists.lists[0].members = ["not an address"])))).toEqual([
            expect.stringMatching(/^mailinfra:lists\.lists\[0\]\.members\[0\]: must match pattern/),
        ]);
        expect(problemsOf(labWith((c) => (c.lists.lists[0].name = "Bad/Name")))).toEqual([expect.stringMatching(/^mailinfra:lists\.lists\[0\]\.name: must match pattern/)]);
    });
});
