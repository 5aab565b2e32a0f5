import { defineConfig } from "vitest/config";

export default defineConfig({
    test: {
        projects: [
            { test: { name: "unit", include: ["test/unit/**/*.test.ts"], testTimeout: 30_000 } },
            {
                test: {
                    name: "lab",
                    include: ["test/lab/**/*.test.ts"],
                    // real hosts: one file at a time, generous limits for package installs
                    fileParallelism: false,
                    testTimeout: 20 * 60_000,
                    hookTimeout: 30 * 60_000,
                },
            },
        ],
    },
});
