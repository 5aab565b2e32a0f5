// The engine starts this provider in a process group of its own, so a SIGKILLed CLI leaves it running. Once its
// parent is gone it finishes the host operations already in flight (cutting one could leave a half-written step)
// and then exits, instead of idling forever.
import * as provider from "@pulumi/pulumi/provider";

export function exitWhenOrphaned(p: provider.Provider, everyMs = 2000): provider.Provider {
    const parent = process.ppid;
    let inFlight = 0;
    const wrapped: any = { ...p };
    for (const [k, v] of Object.entries(p)) {
        if (typeof v !== "function") continue;
        wrapped[k] = async (...args: unknown[]) => {
            inFlight++;
            try {
                return await (v as (...a: unknown[]) => Promise<unknown>).apply(p, args);
            } finally {
                inFlight--;
            }
        };
    }
    setInterval(() => {
        if (process.ppid !== parent && inFlight === 0) process.exit(1);
    }, everyMs).unref();
    return wrapped as provider.Provider;
}
