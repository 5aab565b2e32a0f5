import { describe, expect, it } from "vitest";
import { parseStackConfig } from "../../lib/config";
import { planHost } from "../../lib/roles";
import { listsStepScript, mailmanWebKeys, secondaryRelayDomains } from "../../lib/roles/lists";
import { labWith, problemsOf, stackConfig } from "./stackConfig";

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
        expect(planHost(lab(), "lily").steps.map((s) => s.name)).toEqual(["mailman-lists", "mailman-web"]);
    });

    it("points Mailman at Exim (LMTP in on 8024, SMTP out on 25) with the prototype archive and no REST listener without the web UI", () => {
        const plan = planHost(parseStackConfig(labWith((c) => (c.lists.web = { enabled: false }))), "lily");
        const cfg = plan.files.find((f) => f.path === "/etc/mailman3/mailman.cfg")!;
        expect(cfg.content).toMatch(/^incoming: mailman\.mta\.exim4\.LMTP$/m);
        expect(cfg.content).toMatch(/^lmtp_port: 8024$/m);
        expect(cfg.content).toMatch(/\[archiver\.prototype\]\nenable: yes/);
        expect(cfg.content).toMatch(/\[runner\.rest\]\nstart: no/);
        expect(cfg.content).not.toMatch(/admin_pass|hyperkitty/);
        expect(cfg.fromSecrets).toBeUndefined();
        expect(plan.packages).not.toContain("mailman3-web");
        expect(plan.files.map((f) => f.path)).not.toContain("/etc/mailman3/mailman-web.py");
    });
});

describe("lists web UI (mailman3-web)", () => {
    const plan = () => planHost(lab(), "lily");
    const spec = (p: string) => plan().files.find((f) => f.path === p)!;
    const real = (p: string, secret = "s3cret") => spec(p).fromSecrets!.render({ mailmanWebSecret: secret } as any);
    const value = (text: string, re: RegExp) => re.exec(text)?.[1];

    it("derives three distinct keys from mailmanWebSecret, the same on every render and different for another secret", () => {
        const k = mailmanWebKeys("s3cret");
        expect(new Set(Object.values(k)).size).toBe(3);
        for (const v of Object.values(k)) expect(v).toMatch(/^[0-9a-f]{64}$/);
        expect(mailmanWebKeys("s3cret")).toEqual(k);
        expect(mailmanWebKeys("other").restPassword).not.toBe(k.restPassword);
    });

    it("gives Mailman core and Django the same REST password and HyperKitty the same archiver key", () => {
        const k = mailmanWebKeys("s3cret");
        const core = real("/etc/mailman3/mailman.cfg");
        const django = real("/etc/mailman3/mailman-web.py");
        const archiver = real("/etc/mailman3/mailman-hyperkitty.cfg");
        expect(value(core, /^admin_pass: (.+)$/m)).toBe(k.restPassword);
        expect(value(django, /^MAILMAN_REST_API_PASS = '(.+)'$/m)).toBe(k.restPassword);
        expect(value(django, /^MAILMAN_ARCHIVER_KEY = '(.+)'$/m)).toBe(k.archiverKey);
        expect(value(archiver, /^api_key: (.+)$/m)).toBe(k.archiverKey);
        expect(value(django, /^SECRET_KEY = '(.+)'$/m)).toBe(k.djangoSecretKey);
        // REST on loopback only; the archiver goes through nginx's loopback server, which MAILMAN_ARCHIVER_FROM allows
        expect(core).toMatch(/^\[webservice\]\nhostname: 127\.0\.0\.1\nport: 8001$/m);
        expect(core).not.toMatch(/\[runner\.rest\]/);
        expect(core).toMatch(/\[archiver\.hyperkitty\]\nclass: mailman_hyperkitty\.Archiver\nenable: yes\nconfiguration: \/etc\/mailman3\/mailman-hyperkitty\.cfg/);
        expect(core).toMatch(/\[archiver\.prototype\]\nenable: yes/);
        expect(archiver).toMatch(/^base_url: http:\/\/localhost\/mailman3\/hyperkitty\/$/m);
        expect(django).toContain("MAILMAN_ARCHIVER_FROM = ('127.0.0.1', '::1')");
        // quiet manage.py runs: Debian's cron jobs would otherwise mail Django's warnings every minute
        expect(django).toContain("DEFAULT_AUTO_FIELD = 'django.db.models.AutoField'");
        expect(django).toMatch(/'timeout': 300,\n    'retry': 360,/);
    });

    it("shows only masked keys in the plan's public content (committed rendering, previews)", () => {
        for (const p of ["/etc/mailman3/mailman.cfg", "/etc/mailman3/mailman-web.py", "/etc/mailman3/mailman-hyperkitty.cfg"]) {
            expect(spec(p).content).toContain("(derived from secret mailinfra:mailmanWebSecret)");
            expect(spec(p).content).not.toContain(mailmanWebKeys("s3cret").restPassword);
            expect(spec(p).fromSecrets?.names).toEqual(["mailmanWebSecret"]);
        }
    });

    it("answers only to the host's names, redirects plain HTTP, and checks every file on the host before it goes live", () => {
        const withName = planHost(parseStackConfig(labWith((c) => (c.lists.web = { hostnames: ["lists.wikimedia.test"] }))), "lily");
        const django = withName.files.find((f) => f.path === "/etc/mailman3/mailman-web.py")!.content;
        expect(django).toMatch(/^ALLOWED_HOSTS = \['lily\.lab\.test', 'lists\.wikimedia\.test', 'localhost'\]$/m);
        const nginx = spec("/etc/nginx/sites-enabled/mailman3-web").content;
        expect(nginx).toMatch(/listen 80 default_server;[\s\S]*?return 301 https:\/\/\$host\$request_uri;/);
        expect(nginx).toMatch(/listen 127\.0\.0\.1:80;/);
        expect(nginx).toContain("ssl_certificate /etc/ssl/certs/mailinfra.pem;");
        expect(nginx).toContain("ssl_certificate_key /etc/ssl/private/mailinfra.key;");
        expect(nginx).toContain("uwsgi_param SCRIPT_NAME /mailman3;");
        expect(spec("/etc/nginx/sites-enabled/mailman3-web").validate).toContain('nginx -t -q -c "$d/nginx.conf"');
        expect(spec("/etc/mailman3/mailman-web.py").validate).toContain("django-admin check");
        expect(spec("/etc/mailman3/mailman-hyperkitty.cfg").validate).toContain("configparser");
        expect(plan().debconf).toContain("mailman3-web mailman3-web/database-type select sqlite3");
        expect(plan().services.map((s) => s.name)).toEqual(expect.arrayContaining(["mailman3-web", "nginx"]));
    });

    it("names a bad web host name", () => {
        expect(problemsOf(labWith((c) => (c.lists.web = { hostnames: ["not a name"] })))).toContain('mailinfra:lists.web.hostnames[0]: must match format "hostname" (got "not a name")');
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
