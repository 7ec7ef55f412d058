package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"
)

// Configuration comes from three places, later ones winning: the YAML file
// given with -config (or JIM_CONFIG), environment variables JIM_<NAME> and
// the command line. Every option has one name in all three: the flag name,
// as a YAML key (heartbeat-timeout: 120s) and upper-cased with '-' turned
// into '_' behind JIM_ (JIM_HEARTBEAT_TIMEOUT=120s). Values from the file
// and the environment go through the same parsers as flags, so they are
// checked the same way.

// metaFlags select what jimd does with the configuration; they are not
// configuration themselves.
var metaFlags = map[string]bool{"config": true, "check-config": true, "print-config": true}

// secretFlags are shown as "<redacted>" by -print-config.
var secretFlags = map[string]bool{"api-key": true, "jwt-secret": true}

// envName is the environment variable of option name.
func envName(name string) string {
	return "JIM_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// loadConfig applies the config file and the environment to fs, whose
// command line was already parsed: options set on the command line keep
// their values.
func loadConfig(fs *flag.FlagSet, path string, environ []string) error {
	known := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) {
		if !metaFlags[f.Name] {
			known[f.Name] = true
		}
	})
	onCmdLine := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { onCmdLine[f.Name] = true })

	k := koanf.New(".")
	if path != "" {
		if err := k.Load(file.Provider(path), yaml.Parser()); err != nil {
			return fmt.Errorf("config file %s: %s", path, oneLine(err))
		}
		var unknown []string
		for _, key := range k.Keys() {
			if !known[key] {
				unknown = append(unknown, key)
			}
		}
		if len(unknown) > 0 {
			sort.Strings(unknown)
			return fmt.Errorf("config file %s: unknown option %q (options are the flag names, see jimd -h)", path, unknown[0])
		}
	}
	envNames := map[string]string{}
	for name := range known {
		envNames[envName(name)] = name
	}
	ek := koanf.New(".")
	err := ek.Load(env.Provider(".", env.Opt{
		Prefix:      "JIM_",
		EnvironFunc: func() []string { return environ },
		TransformFunc: func(key, v string) (string, any) {
			if name, ok := envNames[key]; ok {
				return name, v
			}
			return "", nil // JIM_ variables that are not options are ignored
		},
	}), nil)
	if err != nil {
		return fmt.Errorf("environment: %s", oneLine(err))
	}
	if err := k.Merge(ek); err != nil {
		return err
	}
	keys := k.Keys()
	sort.Strings(keys)
	for _, key := range keys {
		if onCmdLine[key] {
			continue
		}
		v, err := valueString(k.Get(key))
		if err != nil {
			return fmt.Errorf("option %s: %v", key, err)
		}
		if err := fs.Set(key, v); err != nil {
			src := "config file"
			if ek.Exists(key) {
				src = envName(key)
			}
			return fmt.Errorf("%s: bad value %q for %s: %s", src, v, key, oneLine(err))
		}
	}
	return nil
}

// valueString renders a YAML value for a flag's parser. Lists (of NATS
// URLs, of default groups) become comma-separated.
func valueString(v any) (string, error) {
	switch x := v.(type) {
	case nil:
		return "", nil
	case string:
		return x, nil
	case []any:
		parts := make([]string, 0, len(x))
		for _, e := range x {
			s, err := valueString(e)
			if err != nil {
				return "", err
			}
			parts = append(parts, s)
		}
		return strings.Join(parts, ","), nil
	case map[string]any:
		return "", errors.New("a value, not a section, is expected")
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), nil
	case time.Duration:
		return x.String(), nil
	default:
		return fmt.Sprint(x), nil
	}
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

// printConfig writes every option's effective value as YAML that -config
// accepts, with its help text as a comment.
func printConfig(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintln(w, "# jimd effective configuration (defaults, then -config file, then JIM_* environment, then flags)")
	fs.VisitAll(func(f *flag.Flag) {
		if metaFlags[f.Name] {
			return
		}
		v := f.Value.String()
		if secretFlags[f.Name] && v != "" {
			v = "<redacted>"
		}
		fmt.Fprintf(w, "# %s\n%s: %s\n", strings.ReplaceAll(f.Usage, "\n", " "), f.Name, yamlScalar(f, v))
	})
}

func yamlScalar(f *flag.Flag, v string) string {
	if g, ok := f.Value.(flag.Getter); ok && v != "<redacted>" {
		switch g.Get().(type) {
		case bool, int, int64, uint, uint64, float64:
			return v
		}
	}
	return strconv.Quote(v)
}
