//go:build ignore

// testsum reads `go test -json` events on stdin and prints what a plain
// `go test` would: one "ok"/"FAIL" line per package and the full output of
// every failed test (or of a package that failed outside a test, e.g. a
// build error). It appends "PASSED FAILED SKIPPED" to the file named by
// -counts, counting every test and subtest, plus one failure per package
// that failed with no failed test.
//
//	go test -json ./... | GOWORK=off go run scripts/lib/testsum.go -counts FILE
//
// Exit status: 1 when anything failed, else 0.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
)

type event struct {
	Action  string
	Package string
	Test    string
	Output  string
	Elapsed float64
}

func main() {
	countsFile := flag.String("counts", "", "file to append \"passed failed skipped\" to")
	flag.Parse()

	var passed, failed, skipped int
	output := map[string]*strings.Builder{} // package + "\x00" + test → output
	pkgFailedTests := map[string]int{}
	pkgDone := map[string]bool{} // package result printed (go test may report it twice)
	key := func(e event) string { return e.Package + "\x00" + e.Test }

	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 1<<26)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &e) != nil {
			fmt.Println(string(line)) // not JSON: e.g. a build error on stderr merged in
			continue
		}
		switch e.Action {
		case "output", "build-output":
			b := output[key(e)]
			if b == nil {
				b = &strings.Builder{}
				output[key(e)] = b
			}
			b.WriteString(e.Output)
		case "pass", "fail", "skip":
			if e.Test != "" {
				switch e.Action {
				case "pass":
					passed++
				case "skip":
					skipped++
				case "fail":
					failed++
					pkgFailedTests[e.Package]++
					if b := output[key(e)]; b != nil {
						fmt.Print(b.String())
					}
				}
				delete(output, key(e))
				continue
			}
			if pkgDone[e.Package] {
				continue
			}
			pkgDone[e.Package] = true
			switch e.Action {
			case "pass":
				fmt.Printf("ok  \t%s\t%.3fs\n", e.Package, e.Elapsed)
			case "skip":
				fmt.Printf("?   \t%s\t[no test files]\n", e.Package)
			case "fail":
				if pkgFailedTests[e.Package] == 0 {
					failed++ // build failure, TestMain failure, timeout, crash
				}
				// Output of tests that never finished (a timeout or a crash
				// dump lands there), then the package's own output.
				for k, b := range output {
					if pkg, test, _ := strings.Cut(k, "\x00"); pkg == e.Package && test != "" {
						fmt.Print(b.String())
						delete(output, k)
					}
				}
				if b := output[key(e)]; b != nil {
					fmt.Print(b.String())
				}
				fmt.Printf("FAIL\t%s\t%.3fs\n", e.Package, e.Elapsed)
			}
			delete(output, key(e))
		}
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "testsum:", err)
		failed++
	}
	if *countsFile != "" {
		f, err := os.OpenFile(*countsFile, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			fmt.Fprintln(os.Stderr, "testsum:", err)
			os.Exit(2)
		}
		fmt.Fprintf(f, "%d %d %d\n", passed, failed, skipped)
		f.Close()
	}
	if failed > 0 {
		os.Exit(1)
	}
}
