// Each host's nftables firewall and the daemons behind it, seen from the lab's "internet" host ext
// (198.51.100.20, outside mail.ownNetworks and outside ssh.adminNetworks): a full TCP port scan shows
// exactly each role's ports, the ticket DB and the store's SMTP answer only their peers, and a rule set
// that would lock out the converging machine never goes live.
import * as fs from "fs";
import * as path from "path";
import * as yaml from "js-yaml";
import { beforeAll, describe, expect, it } from "vitest";
import { convergedLab, FLEET, must, projectCopy, pulumi, ssh, swaksFromExt } from "./harness";

const EXT = "198.51.100.20";
const HOSTS: Record<string, string> = { mchenry: "198.51.100.11", sanger: "198.51.100.12", lily: "198.51.100.13", otrs: "198.51.100.14", streber: "198.51.100.15" };
const { mchenry: RELAY, sanger: STORE, otrs: OTRS } = HOSTS;
const GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

/** What the internet may reach on each host (the issue's table); SSH is in none of them. */
const OPEN_TO_ALL: Record<string, number[]> = {
    mchenry: [25, 465],
    sanger: [465, 587, 993],
    lily: [25, 80, 443],
    otrs: [80, 443],
    streber: [80, 443],
};

/** Ports a daemon may listen on beyond loopback: the public ones, SSH, and those open to peers only. */
const LISTENING_ALLOWED: Record<string, number[]> = {
    mchenry: [22, 25, 465],
    sanger: [22, 25, 465, 587, 993],
    lily: [22, 25, 80, 443],
    otrs: [22, 25, 80, 443, 3306],
    streber: [22, 25, 80, 443],
};

/** nmap from ext over every TCP port of every fleet host: per host, the ports not filtered (open or closed). */
function scanFromExt(): Record<string, { open: number[]; reachable: number[]; ignored: string }> {
    // nmap on ext, from the lab apt proxy the first time (ext is the lab's fixture host)
    must(ssh(EXT, "command -v nmap >/dev/null || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nmap >/dev/null; }"), "nmap on ext");
    const r = must(ssh(EXT, `timeout 600 nmap -n -Pn -sS -p- --min-rate 8000 --max-retries 2 -oG - ${Object.values(HOSTS).join(" ")}`), "port scan");
    const out: Record<string, { open: number[]; reachable: number[]; ignored: string }> = {};
    for (const line of r.out.split("\n").filter((l) => /^Host: \S+ .*Ports: /.test(l) || /^Host: \S+ .*Ignored State/.test(l))) {
        const address = line.split(" ")[1];
        const name = Object.keys(HOSTS).find((h) => HOSTS[h] === address)!;
        const ports = (line.match(/Ports: ([^\t]*)/)?.[1] ?? "").split(", ").filter(Boolean).map((p) => p.split("/"));
        out[name] = {
            open: ports.filter((p) => p[1] === "open").map((p) => Number(p[0])),
            reachable: ports.filter((p) => p[1] === "open" || p[1] === "closed").map((p) => Number(p[0])),
            ignored: line.match(/Ignored State: (\S+)/)?.[1] ?? "",
        };
    }
    return out;
}

/** Does a TCP connection from one host to host:port get through (a SYN answered at all, even by a reset)? */
function tcpAnswers(from: string, host: string, port: number): boolean {
    const r = ssh(from, `timeout 5 bash -c 'exec 3<>/dev/tcp/${host}/${port}' 2>&1; echo "rc=$?"`);
    return !/rc=124/.test(r.out);
}

describe("firewall per role (nftables from the plan)", () => {
    beforeAll(() => convergedLab(FLEET));

    it("a full TCP port scan from ext shows exactly each role's ports; every other port, SSH included, is filtered", () => {
        const started = Date.now();
        const scan = scanFromExt();
        console.log(`port scan of ${Object.keys(HOSTS).length} hosts × 65535 ports from ext: ${Date.now() - started} ms\n${JSON.stringify(scan)}`);
        for (const [host, expected] of Object.entries(OPEN_TO_ALL)) {
            expect({ host, ...scan[host] }).toMatchObject({ host, ignored: "filtered" });
            expect({ host, reachable: scan[host].reachable.sort((a, b) => a - b) }).toEqual({ host, reachable: expected });
            expect(scan[host].reachable).not.toContain(22);
        }
        // the daemons answer on them (RT's and Znuny's 443 come with their HTTPS setup)
        for (const [host, port] of [["mchenry", 25], ["mchenry", 465], ["sanger", 465], ["sanger", 587], ["sanger", 993], ["lily", 25], ["lily", 443], ["otrs", 80], ["streber", 80]] as const)
            expect({ host, port, open: scan[host].open.includes(port) }).toEqual({ host, port, open: true });
    });

    it("SSH is refused from ext and open from the build machine (ssh.adminNetworks) and for the store's own pushes", () => {
        for (const address of Object.values(HOSTS)) expect({ address, answers: tcpAnswers(EXT, address, 22) }).toEqual({ address, answers: false });
        for (const address of Object.values(HOSTS)) expect(ssh(address, "true").code).toBe(0);
        // the account push and the Bayes/backup keys reach the relay and lily from the store
        expect(tcpAnswers(STORE, RELAY, 22)).toBe(true);
        expect(tcpAnswers(STORE, HOSTS.lily, 22)).toBe(true);
        expect(must(ssh(STORE, "/usr/local/sbin/mailinfra-push-userdb"), "account DB push").code).toBe(0);
        // the relay has no business on lily's SSH
        expect(tcpAnswers(RELAY, HOSTS.lily, 22)).toBe(false);
    });

    it("keeps 3306 on the OTRS host unreachable from ext and the store, while the relay's ticket DB lookup works", () => {
        expect(tcpAnswers(EXT, OTRS, 3306)).toBe(false);
        expect(tcpAnswers(STORE, OTRS, 3306)).toBe(false);
        const lookup = `\${lookup mysql{SELECT value0 FROM system_address WHERE value0='otrs-test@wikimedia.test' AND valid_id=1}{found:\$value}{notfound}}`;
        expect(ssh(RELAY, `exim4 -be '${lookup.replace(/'/g, `'\\''`)}' 2>&1`).out.trim()).toBe("found:otrs-test@wikimedia.test");
    });

    it("refuses GTUBE sent straight to the store's :25 from ext (no connection; Exim's ACL refuses non-relays too), and the relay rejects it by spam policy", () => {
        const direct = swaksFromExt(["--server", STORE, "--timeout", "10", "--to", "smoke@wikimedia.test", "--body", GTUBE]);
        expect(direct.out).not.toMatch(/<-\s+220 /);
        expect(direct.out).not.toMatch(/<-\s+250 /);
        expect(direct.out).toMatch(/error connecting|timed? ?out/i);
        // behind the firewall, the store's Exim takes unauthenticated mail for its domains from the relays and lily only
        const asExt = ssh(STORE, `printf 'EHLO ext.example.net\\r\\nMAIL FROM:<a@example.net>\\r\\nRCPT TO:<smoke@wikimedia.test>\\r\\nQUIT\\r\\n' | exim4 -bh ${EXT} 2>/dev/null`).out;
        expect(asExt).toMatch(/^550 mail for wikimedia\.test is accepted from the relays only/m);
        const asRelay = ssh(STORE, `printf 'EHLO mchenry.lab.test\\r\\nMAIL FROM:<a@example.net>\\r\\nRCPT TO:<smoke@wikimedia.test>\\r\\nQUIT\\r\\n' | exim4 -bh ${RELAY} 2>/dev/null`).out;
        expect(asRelay.match(/^\d{3}(?= )/gm)?.slice(-2)).toEqual(["250", "221"]);
        const viaRelay = swaksFromExt(["--server", RELAY, "--to", "smoke@wikimedia.test", "--body", GTUBE]);
        expect(viaRelay.out).toMatch(/<\*\* 550 This message scored [0-9.]+ spam points\./);
    });

    it("has no daemon listening beyond loopback on a port its role does not serve (no 465 on lily)", () => {
        for (const [host, allowed] of Object.entries(LISTENING_ALLOWED)) {
            const sockets = must(ssh(HOSTS[host], "ss -ltnH | awk '{print $4}'"), `ss on ${host}`).out.trim().split("\n");
            const exposed = sockets.filter((s) => !/^(127\.\d+\.\d+\.\d+|\[::1\]|::1):\d+$/.test(s)).map((s) => Number(s.slice(s.lastIndexOf(":") + 1)));
            expect({ host, extra: [...new Set(exposed.filter((p) => !allowed.includes(p)))] }).toEqual({ host, extra: [] });
        }
        expect(ssh(HOSTS.lily, "ss -ltnH 'sport = :465'").out.trim()).toBe("");
        // MariaDB on the host address only (the relays come over TCP), never the wildcard
        expect(ssh(OTRS, "ss -ltnH 'sport = :3306' | awk '{print $4}'").out.trim()).toBe(`${OTRS}:3306`);
    });

    it("refuses a rule set that would drop SSH from the converging machine: pulumi up fails naming it, the old rules stay live", () => {
        const before = ssh(RELAY, "sha256sum /etc/nftables.conf; nft list table inet mailinfra | sha256sum").out;
        const copy = projectCopy();
        try {
            const stackFile = path.join(copy, "Pulumi.lab.yaml");
            const doc = yaml.load(fs.readFileSync(stackFile, "utf8")) as { config: Record<string, any> };
            doc.config["mailinfra:ssh"].adminNetworks = [`${EXT}/32`];
            fs.writeFileSync(stackFile, yaml.dump(doc));
            const r = pulumi(["up", "--stack", "lab", "--yes", "--skip-preview", "--target", "urn:pulumi:lab::mailinfra::mailinfra:fleet:MailHost$mailinfra:host:File::mchenry/etc/nftables.conf"], { cwd: copy });
            expect(r.code).not.toBe(0);
            expect(r.out).toContain("check of new /etc/nftables.conf failed");
            expect(r.out).toMatch(/refused: this rule set would drop new SSH connections from 198\.51\.100\.1, the machine applying it/);
            expect(r.out).toContain("the current /etc/nftables.conf was left in place");
        } finally {
            fs.rmSync(copy, { recursive: true, force: true });
        }
        expect(ssh(RELAY, "sha256sum /etc/nftables.conf; nft list table inet mailinfra | sha256sum").out).toBe(before);
        expect(ssh(RELAY, "true").code).toBe(0);
        expect(pulumi(["preview", "--stack", "lab", "--expect-no-changes"]).code).toBe(0);
    });
});
