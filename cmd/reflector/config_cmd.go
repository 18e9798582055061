package main

import "fmt"

func runConfig(e *env, args []string) error {
	fs := newFlags(e, "config")
	cfgPath := configFlag(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 || fs.Arg(0) != "check" {
		return usagef("config: expected the subcommand 'check'")
	}
	cfg, src, notes, err := loadConfig(e, *cfgPath)
	if err != nil {
		return err
	}
	for _, n := range notes {
		fmt.Fprintf(e.stderr, "note: %s\n", n)
	}
	fmt.Fprintf(e.stderr, "configuration OK (from %s); effective settings:\n", describeSource(src))
	fmt.Fprint(e.stdout, cfg.TOML())
	return nil
}
