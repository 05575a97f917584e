// Package logging builds the zerolog logger of mtlsrelay's commands: JSON by
// default, human-readable console output on a terminal.
package logging

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
)

// New returns a logger writing to out. format is "json", "console" or
// "auto"/"" (console when out is a terminal). level is a zerolog level name;
// "" means info.
func New(out io.Writer, level, format string) (zerolog.Logger, error) {
	lvl := zerolog.InfoLevel
	if level != "" {
		l, err := zerolog.ParseLevel(level)
		if err != nil {
			return zerolog.Nop(), fmt.Errorf("log level %q: use trace, debug, info, warn or error", level)
		}
		lvl = l
	}
	switch format {
	case "", "auto":
		if f, ok := out.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
			out = zerolog.ConsoleWriter{Out: out, TimeFormat: time.TimeOnly}
		}
	case "console":
		out = zerolog.ConsoleWriter{Out: out, TimeFormat: time.TimeOnly, NoColor: true}
	case "json":
	default:
		return zerolog.Nop(), fmt.Errorf("log format %q: use json, console or auto", format)
	}
	return zerolog.New(out).Level(lvl).With().Timestamp().Logger(), nil
}
