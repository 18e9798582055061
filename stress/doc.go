// Package stress holds the reflector's heavy hardening tests: load held by
// a thousand idle peers, connection and handshake floods, SIGKILL during
// state writes, the audit log on a full filesystem, and two hundred data
// plane sessions that must leave nothing open. They build only with the
// tag `stress` on Linux (`make stress`); docs/SECURITY.md says what each
// proves.
package stress
