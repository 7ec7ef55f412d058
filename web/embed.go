// Package web holds the browser chat page that jimd serves at "/". The files
// under static/ are embedded into the binary, so a deployment is one file.
package web

import (
	"embed"
	"io/fs"
)

//go:embed static
var files embed.FS

// FS returns the page's files rooted at the site root ("index.html", ...).
func FS() fs.FS {
	sub, err := fs.Sub(files, "static")
	if err != nil {
		panic(err) // the embed pattern guarantees the folder exists
	}
	return sub
}
