//go:build ignore

// gvisor-closure prints the gVisor packages that the packages named on
// standard input reach through imports in any of their non-test files,
// whatever the build tags (as `go mod tidy` reads them), one import path a
// line, sorted. scripts/gvisor-sync.sh runs it to close the set of packages
// it copies: go list -deps only follows the files of one build.
//
//	go run scripts/gvisor-closure.go MODULE-DIR < packages
package main

import (
	"bufio"
	"fmt"
	"go/ast"
	"go/build/constraint"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

const module = "gvisor.dev/gvisor"

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: go run scripts/gvisor-closure.go MODULE-DIR < packages")
		os.Exit(2)
	}
	root := os.Args[1]
	seen := map[string]bool{}
	var queue []string
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		if p := strings.TrimSpace(sc.Text()); p != "" && !seen[p] {
			seen[p] = true
			queue = append(queue, p)
		}
	}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		imports, err := packageImports(filepath.Join(root, strings.TrimPrefix(p, module)))
		if err != nil {
			fmt.Fprintf(os.Stderr, "gvisor-closure: %s: %v\n", p, err)
			os.Exit(1)
		}
		for _, imp := range imports {
			if strings.HasPrefix(imp, module+"/") && !seen[imp] {
				seen[imp] = true
				queue = append(queue, imp)
			}
		}
	}
	out := make([]string, 0, len(seen))
	for p := range seen {
		out = append(out, p)
	}
	slices.Sort(out)
	for _, p := range out {
		fmt.Println(p)
	}
}

// packageImports returns the imports of the non-test Go files in dir whose
// build constraint some set of tags other than "ignore" satisfies.
func packageImports(dir string) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no Go files in %s", dir)
	}
	var imports []string
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, parser.ImportsOnly|parser.ParseComments)
		if err != nil {
			return nil, err
		}
		if ignored(f.Comments) {
			continue
		}
		for _, spec := range f.Imports {
			path, err := strconv.Unquote(spec.Path.Value)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			imports = append(imports, path)
		}
	}
	return imports, nil
}

// ignored reports whether a //go:build line among comments can only hold
// with the tag "ignore" (the rule of go mod tidy, which takes every other
// tag, and its negation, as possible).
func ignored(comments []*ast.CommentGroup) bool {
	for _, g := range comments {
		for _, c := range g.List {
			if !constraint.IsGoBuild(c.Text) {
				continue
			}
			x, err := constraint.Parse(c.Text)
			if err != nil {
				return false
			}
			return !possible(x, true)
		}
	}
	return false
}

// possible evaluates x with every tag but "ignore" taking the value prefer
// (flipped under a negation), as cmd/go does with all tags enabled.
func possible(x constraint.Expr, prefer bool) bool {
	switch x := x.(type) {
	case *constraint.TagExpr:
		return x.Tag != "ignore" && prefer
	case *constraint.NotExpr:
		return !possible(x.X, !prefer)
	case *constraint.AndExpr:
		return possible(x.X, prefer) && possible(x.Y, prefer)
	case *constraint.OrExpr:
		return possible(x.X, prefer) || possible(x.Y, prefer)
	}
	return true
}
