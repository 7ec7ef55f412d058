// Command jimbench is jim's load generator. Run "jimbench -h" for the flags;
// the bench package documents the scenarios and what is measured.
package main

import (
	"os"

	"jim/bench"
)

func main() {
	os.Exit(bench.Main(os.Args[1:], os.Stdout, os.Stderr))
}
