package channels_test

import (
	"bytes"
	"fmt"
	"go/ast"
	"go/format"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"unicode"
)

// The documentation's Go code is checked by two tests:
//
//   - every ```go block of README.md and docs/*.md is either a whole file
//     (its first line of code is a package clause), gofmt-formatted,
//     type-checked and vetted as a package of this module, or a snippet marked by the line before it
//     with <!-- snippet: [dir.]ExampleName -->, whose non-blank lines must be
//     lines of that example function, in order (dir is the package directory
//     relative to the repository, "." when omitted);
//   - every relative link of those pages names a file that exists, and a
//     #fragment of a Markdown page names one of its headings.

// docPages are the pages whose code blocks and links are checked.
func docPages(t *testing.T) []string {
	t.Helper()
	pages, err := filepath.Glob("docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	return append([]string{"README.md"}, pages...)
}

type docBlock struct {
	page    string
	line    int    // line of the first line of code (1-based)
	snippet string // the example named by a snippet marker, or ""
	code    []string
}

var snippetMarker = regexp.MustCompile(`^<!--\s*snippet:\s*(\S+)\s*-->$`)

// goBlocks returns the ```go blocks of a Markdown page.
func goBlocks(t *testing.T, page string) []docBlock {
	t.Helper()
	src, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(src), "\n")
	var blocks []docBlock
	for i := 0; i < len(lines); i++ {
		fence := strings.TrimSpace(lines[i])
		if !strings.HasPrefix(fence, "```") {
			continue
		}
		lang := strings.TrimSpace(strings.TrimPrefix(fence, "```"))
		start := i + 1
		end := start
		for end < len(lines) && strings.TrimSpace(lines[end]) != "```" {
			end++
		}
		if end == len(lines) {
			t.Errorf("%s:%d: code block never closed", page, i+1)
			break
		}
		if lang == "go" {
			b := docBlock{page: page, line: start + 1, code: lines[start:end]}
			for j := i - 1; j >= 0; j-- {
				if s := strings.TrimSpace(lines[j]); s != "" {
					if m := snippetMarker.FindStringSubmatch(s); m != nil {
						b.snippet = m[1]
					}
					break
				}
			}
			blocks = append(blocks, b)
		}
		i = end
	}
	return blocks
}

// isWholeFile reports whether the block's first line of code, after blank
// lines and comments, is a package clause.
func isWholeFile(code []string) bool {
	for _, l := range code {
		s := strings.TrimSpace(l)
		if s == "" || strings.HasPrefix(s, "//") {
			continue
		}
		return strings.HasPrefix(s, "package ")
	}
	return false
}

func TestDocsGoBlocks(t *testing.T) {
	var whole []docBlock
	n, snippets := 0, 0
	for _, page := range docPages(t) {
		for _, b := range goBlocks(t, page) {
			n++
			switch {
			case b.snippet != "":
				snippets++
				checkSnippet(t, b)
			case isWholeFile(b.code):
				src := []byte(strings.Join(b.code, "\n") + "\n")
				if f, err := format.Source(src); err == nil && !bytes.Equal(f, src) {
					t.Errorf("%s:%d: block not gofmt-formatted; gofmt gives:\n%s", b.page, b.line, f)
				}
				whole = append(whole, b)
			default:
				t.Errorf("%s:%d: a ```go block must be a whole file (package clause first) "+
					"or follow a <!-- snippet: [dir.]ExampleName --> line naming the example that contains it",
					b.page, b.line)
			}
		}
	}
	if n == 0 {
		t.Fatal("no ```go block found: the pages moved?")
	}
	if len(whole) > 0 {
		vetWholeFiles(t, whole)
	}
	t.Logf("%d go blocks: %d whole files vetted, %d snippets checked", n, len(whole), snippets)
}

// vetWholeFiles writes each block as the only file of a package in a
// directory of this module (named with a leading underscore, so that ./...
// patterns never see it) and runs one go vet on them all. A //line
// directive makes every error point at the page.
func vetWholeFiles(t *testing.T, blocks []docBlock) {
	t.Helper()
	dir, err := os.MkdirTemp(".", "_docblocks-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	args := []string{"vet"}
	for i, b := range blocks {
		pkg := filepath.Join(dir, fmt.Sprintf("b%02d", i))
		args = append(args, "./"+filepath.ToSlash(pkg))
		if err := os.Mkdir(pkg, 0o755); err != nil {
			t.Fatal(err)
		}
		abs, err := filepath.Abs(b.page)
		if err != nil {
			t.Fatal(err)
		}
		src := fmt.Sprintf("//line %s:%d\n%s\n", abs, b.line, strings.Join(b.code, "\n"))
		if err := os.WriteFile(filepath.Join(pkg, "main.go"), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.Command(goTool, args...)
	// Offline and with this module's go.mod as it is: a block importing a
	// module the library does not require fails instead of fetching it.
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=readonly", "GOPROXY=off", "GOWORK=off")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Errorf("go vet of the documentation's whole-file blocks: %v\n%s", err, out.String())
	}
}

// checkSnippet checks that the snippet's non-blank lines are, in order and
// with surrounding white space ignored, lines of the example it names.
func checkSnippet(t *testing.T, b docBlock) {
	t.Helper()
	dir, name := ".", b.snippet
	if i := strings.LastIndex(b.snippet, "."); i >= 0 {
		dir, name = b.snippet[:i], b.snippet[i+1:]
	}
	if !strings.HasPrefix(name, "Example") {
		t.Errorf("%s:%d: snippet marker %q does not name an example function", b.page, b.line, b.snippet)
		return
	}
	body, ok := exampleSource(t, dir, name)
	if !ok {
		t.Errorf("%s:%d: snippet marker %q: no func %s in %s/*_test.go", b.page, b.line, b.snippet, name, dir)
		return
	}
	var have []string
	for _, l := range strings.Split(body, "\n") {
		have = append(have, strings.TrimSpace(l))
	}
	at := 0
	for k, l := range b.code {
		want := strings.TrimSpace(l)
		if want == "" {
			continue
		}
		for at < len(have) && have[at] != want {
			at++
		}
		if at == len(have) {
			t.Errorf("%s:%d: line not found (in order) in %s: %q", b.page, b.line+k, b.snippet, want)
			return
		}
		at++
	}
}

// exampleSource returns the source text of the function name declared in a
// _test.go file of dir.
func exampleSource(t *testing.T, dir, name string) (string, bool) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*_test.go"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		fset := token.NewFileSet()
		af, err := parser.ParseFile(fset, f, src, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range af.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok && fd.Recv == nil && fd.Name.Name == name {
				return string(src[fset.Position(fd.Pos()).Offset:fset.Position(fd.End()).Offset]), true
			}
		}
	}
	return "", false
}

var (
	mdLink     = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	codeSpan   = regexp.MustCompile("`[^`]*`")
	htmlHeader = regexp.MustCompile(`^#{1,6}\s+(.*?)\s*#*\s*$`)
)

func TestDocsLinks(t *testing.T) {
	anchors := map[string]map[string]bool{}
	headings := func(page string) map[string]bool {
		if a, ok := anchors[page]; ok {
			return a
		}
		a := map[string]bool{}
		src, err := os.ReadFile(page)
		if err == nil {
			seen := map[string]int{}
			inCode := false
			for _, l := range strings.Split(string(src), "\n") {
				if strings.HasPrefix(strings.TrimSpace(l), "```") {
					inCode = !inCode
					continue
				}
				if m := htmlHeader.FindStringSubmatch(l); m != nil && !inCode {
					s := slug(m[1])
					if k := seen[s]; k > 0 {
						a[fmt.Sprintf("%s-%d", s, k)] = true
					} else {
						a[s] = true
					}
					seen[s]++
				}
			}
		}
		anchors[page] = a
		return a
	}
	for _, page := range docPages(t) {
		src, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		inCode := false
		for i, l := range strings.Split(string(src), "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), "```") {
				inCode = !inCode
				continue
			}
			if inCode {
				continue
			}
			for _, m := range mdLink.FindAllStringSubmatch(codeSpan.ReplaceAllString(l, ""), -1) {
				target := m[1]
				if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
					continue
				}
				file, frag, _ := strings.Cut(target, "#")
				path := page
				if file != "" {
					path = filepath.ToSlash(filepath.Join(filepath.Dir(page), file))
				}
				if _, err := os.Stat(path); err != nil {
					t.Errorf("%s:%d: link %q: %s does not exist", page, i+1, target, path)
					continue
				}
				if frag != "" && strings.HasSuffix(path, ".md") && !headings(path)[frag] {
					t.Errorf("%s:%d: link %q: %s has no heading #%s", page, i+1, target, path, frag)
				}
			}
		}
	}
}

// slug is the anchor GitHub gives a heading: lower case, punctuation other
// than '-' and '_' removed, spaces turned into '-'.
func slug(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}
