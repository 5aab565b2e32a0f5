// A TCP proxy on loopback that cuts connections the way a failing network does (tests of the provider's SSH).
import * as net from "net";

/** Forwards loopback connections to one TCP service; can reset them after N client→server bytes, or answer nothing. */
export class CuttingProxy {
    cutAfterBytes = Infinity;
    answerNothing = false;
    connections = 0;
    cuts = 0;
    private readonly open = new Set<net.Socket>();
    private readonly server = net.createServer((client) => this.accept(client));
    constructor(
        private readonly upstreamHost: string,
        private readonly upstreamPort: number,
    ) {}
    get port(): number {
        return (this.server.address() as net.AddressInfo).port;
    }
    listen(): Promise<void> {
        return new Promise((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    }
    close(): Promise<void> {
        this.resetAll();
        return new Promise((resolve) => this.server.close(() => resolve()));
    }
    /** Resets every connection now (a network failure in the middle of a step). */
    resetAll(): void {
        for (const s of this.open) s.resetAndDestroy();
        this.open.clear();
    }
    private accept(client: net.Socket): void {
        this.connections++;
        this.open.add(client);
        client.on("error", () => undefined).on("close", () => this.open.delete(client));
        if (this.answerNothing) return;
        const upstream = net.connect(this.upstreamPort, this.upstreamHost);
        this.open.add(upstream);
        upstream.on("error", () => client.destroy()).on("close", () => (this.open.delete(upstream), client.destroy()));
        client.on("close", () => upstream.destroy());
        let forwarded = 0;
        const limit = this.cutAfterBytes;
        client.on("data", (chunk: Buffer) => {
            if (forwarded + chunk.length < limit) {
                forwarded += chunk.length;
                upstream.write(chunk);
                return;
            }
            upstream.write(chunk.subarray(0, limit - forwarded), () => upstream.destroy());
            forwarded = limit;
            this.cuts++;
            client.resetAndDestroy();
        });
        upstream.on("data", (chunk: Buffer) => client.write(chunk));
    }
}

