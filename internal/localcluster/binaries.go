package localcluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// KubernetesVersion is the control plane the build script pins.
const KubernetesVersion = "1.37.2"

// Binaries the control plane needs, in the cache directory.
var binaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok"}

// BinDir is where the built control-plane binaries live: $REBALANCER_K8S_BIN, or the
// machine-wide cache the build script fills.
func BinDir() string {
	if d := os.Getenv("REBALANCER_K8S_BIN"); d != "" {
		return d
	}
	root := os.Getenv("REBALANCER_CACHE")
	if root == "" {
		cache := os.Getenv("XDG_CACHE_HOME")
		if cache == "" {
			home, _ := os.UserHomeDir()
			cache = filepath.Join(home, ".cache")
		}
		root = filepath.Join(cache, "rebalancer")
	}
	return filepath.Join(root, "k8s-v"+KubernetesVersion, "bin")
}

func missingBinaries(dir string) []string {
	var missing []string
	for _, b := range binaries {
		if st, err := os.Stat(filepath.Join(dir, b)); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			missing = append(missing, b)
		}
	}
	return missing
}

// EnsureBinaries builds whatever is missing from BinDir with hack/build-k8s.sh, found
// by walking up from the working directory to the module root. The first build takes
// 15-25 minutes on two cores; later calls return at once.
func EnsureBinaries(ctx context.Context) (string, error) {
	dir := BinDir()
	missing := missingBinaries(dir)
	if len(missing) == 0 {
		return dir, nil
	}
	if os.Getenv("REBALANCER_K8S_BIN") != "" {
		return "", fmt.Errorf("REBALANCER_K8S_BIN=%s lacks %s", dir, strings.Join(missing, ", "))
	}
	script, err := findScript()
	if err != nil {
		return "", fmt.Errorf("control-plane binaries missing from %s (%s) and the build script was not found: %w",
			dir, strings.Join(missing, ", "), err)
	}
	cmd := exec.CommandContext(ctx, script)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr // progress for the person waiting
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building the control plane with %s: %w", script, err)
	}
	if missing := missingBinaries(dir); len(missing) > 0 {
		return "", fmt.Errorf("%s finished but %s still lacks %s", script, dir, strings.Join(missing, ", "))
	}
	return dir, nil
}

func findScript() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		s := filepath.Join(d, "hack", "build-k8s.sh")
		if _, err := os.Stat(s); err == nil {
			return s, nil
		}
		if filepath.Dir(d) == d {
			return "", errors.New("no hack/build-k8s.sh above " + wd)
		}
	}
}
