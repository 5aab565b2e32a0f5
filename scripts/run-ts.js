// Runs a TypeScript file of this repo with the pinned compiler (ts-node vendored by @pulumi/pulumi).
const path = require("path");
const root = path.resolve(__dirname, "..");
const sdk = path.dirname(require.resolve("@pulumi/pulumi/package.json", { paths: [root] }));
require(path.join(sdk, "vendor", "ts-node@7.0.1")).register({
    transpileOnly: true,
    skipProject: true,
    compiler: require.resolve("typescript", { paths: [root] }),
    compilerOptions: { target: "ES2022", module: "commonjs", moduleResolution: "node", esModuleInterop: true },
});
const file = path.resolve(process.argv[2]);
process.argv.splice(1, 2, file);
require(file);
