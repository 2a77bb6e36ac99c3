package main

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
)

// Machine describes where the benchmark ran.
type Machine struct {
	CPU          string            `json:"cpu"`
	Cores        int               `json:"cores"`
	RAM          string            `json:"ram"`
	OS           string            `json:"os"`
	Kernel       string            `json:"kernel"`
	Go           string            `json:"go"`
	Node         string            `json:"node,omitempty"`
	Moleculer    string            `json:"moleculer,omitempty"`
	NodeChannels string            `json:"nodeChannels,omitempty"`
	Modules      map[string]string `json:"modules"` // Go modules measured, by path
}

func describeMachine() Machine {
	m := Machine{CPU: runtime.GOARCH, Cores: runtime.NumCPU(), RAM: "?", OS: runtime.GOOS, Kernel: "?",
		Go: runtime.Version(), Modules: map[string]string{}}
	if v := procField("/proc/cpuinfo", "model name"); v != "" {
		m.CPU = v
	}
	if v := procField("/proc/meminfo", "MemTotal"); v != "" {
		if kb, err := strconv.ParseFloat(strings.TrimSuffix(v, " kB"), 64); err == nil {
			m.RAM = fmt.Sprintf("%.0f GiB", kb/(1<<20))
		}
	}
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		if s := regexp.MustCompile(`(?m)^PRETTY_NAME="?([^"\n]*)"?`).FindSubmatch(b); s != nil {
			m.OS = string(s[1])
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Replace != nil {
				continue // the library itself
			}
			m.Modules[d.Path] = d.Version
		}
	}
	return m
}

// procField is the value of the first "name : value" line of a /proc file.
func procField(path, name string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == name {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// moduleList is "name version, ..." for the module paths (name: the last
// element of the path without its major version suffix).
func (m Machine) moduleList(paths ...string) string {
	var out []string
	for _, p := range paths {
		v, ok := m.Modules[p]
		if !ok {
			continue
		}
		parts := strings.Split(p, "/")
		name := parts[len(parts)-1]
		if regexp.MustCompile(`^v[0-9]+$`).MatchString(name) && len(parts) > 1 {
			name = parts[len(parts)-2]
		}
		out = append(out, name+" "+v)
	}
	return strings.Join(out, ", ")
}
