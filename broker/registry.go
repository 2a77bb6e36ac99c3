package broker

import (
	"fmt"
	"net/url"
	"sort"
	"strings"
	"sync"
)

// Factory builds an adapter. u is nil when the adapter is named by its type
// name alone ("Redis"); the adapter then uses its defaults.
type Factory func(u *url.URL) (Adapter, error)

var registry = struct {
	sync.RWMutex
	byName   map[string]Factory
	byScheme map[string]Factory
}{byName: map[string]Factory{}, byScheme: map[string]Factory{}}

// Register makes an adapter resolvable by type name (case-insensitive) and
// by URL schemes. Adapter packages call it from init, database/sql style, so
// importing github.com/microchannels/channels/redis makes "redis://" work.
// Registering a name or scheme twice panics, as database/sql.Register does:
// it is a programming error found at init.
func Register(name string, schemes []string, f Factory) {
	registry.Lock()
	defer registry.Unlock()
	key := strings.ToLower(name)
	if _, dup := registry.byName[key]; dup {
		panic("channels: Register called twice for adapter " + name)
	}
	registry.byName[key] = f
	for _, s := range schemes {
		s = strings.ToLower(s)
		if _, dup := registry.byScheme[s]; dup {
			panic("channels: Register called twice for scheme " + s)
		}
		registry.byScheme[s] = f
	}
}

// Registered lists the registered type names and schemes.
func Registered() (names, schemes []string) {
	registry.RLock()
	defer registry.RUnlock()
	for n := range registry.byName {
		names = append(names, n)
	}
	for s := range registry.byScheme {
		schemes = append(schemes, s)
	}
	sort.Strings(names)
	sort.Strings(schemes)
	return names, schemes
}

// Resolve builds an adapter from a URL ("redis://host:6379") or a type name
// ("Redis", "memory").
func Resolve(s string) (Adapter, error) {
	if s == "" {
		return nil, fmt.Errorf("%w: adapter is empty", ErrUnknownAdapter)
	}
	registry.RLock()
	if !strings.Contains(s, "://") {
		f, ok := registry.byName[strings.ToLower(s)]
		registry.RUnlock()
		if !ok {
			return nil, fmt.Errorf("%w: no adapter named %q (registered: %s); import its package, e.g. _ \"github.com/microchannels/channels/redis\"",
				ErrUnknownAdapter, s, strings.Join(names(), ", "))
		}
		return f(nil)
	}
	u, err := url.Parse(s)
	if err != nil {
		registry.RUnlock()
		return nil, fmt.Errorf("%w: invalid adapter URL: %v", ErrUnknownAdapter, Redact(err.Error()))
	}
	f, ok := registry.byScheme[strings.ToLower(u.Scheme)]
	registry.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w: no adapter for URL scheme %q; import its package, e.g. _ \"github.com/microchannels/channels/redis\"",
			ErrUnknownAdapter, u.Scheme)
	}
	return f(u)
}

func names() []string {
	out := make([]string, 0, len(registry.byName))
	for n := range registry.byName {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Redact hides passwords in any URL found in s, for logs and errors.
func Redact(s string) string {
	fields := strings.Fields(s)
	for i, f := range fields {
		trim := strings.Trim(f, `"'`)
		if u, err := url.Parse(trim); err == nil && u.User != nil {
			if _, has := u.User.Password(); has {
				fields[i] = strings.Replace(f, trim, u.Redacted(), 1)
			}
		}
	}
	return strings.Join(fields, " ")
}
