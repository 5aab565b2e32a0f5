// The one shell-quoting function: pure, so planners, the drift audit and the provider all use it.

/** Single-quotes a value for bash. */
export function shq(s: string): string {
    return `'${s.replace(/'/g, `'\\''`)}'`;
}
