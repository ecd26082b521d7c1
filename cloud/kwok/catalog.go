package kwok

import (
	"fmt"
	"math"
	"os"

	"k8s.io/apimachinery/pkg/api/resource"

	api "github.com/rebalancer-dev/rebalancer/api/v1alpha1"
	"github.com/rebalancer-dev/rebalancer/cloud"
	"github.com/rebalancer-dev/rebalancer/internal/strictyaml"
)

// CatalogKind is the kind of an offerings catalog file.
const CatalogKind = "OfferingCatalog"

// catalogFile is the YAML form of a catalog:
//
//	apiVersion: rebalancer.dev/v1alpha1
//	kind: OfferingCatalog
//	offerings:
//	  - {name: std-4vcpu-8gb-v2, datacenter: fra1, arch: amd64, cpu: "4", memory: 8Gi, pods: 110, hourlyPrice: 0.06}
type catalogFile struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Offerings  []catalogOffering `json:"offerings"`
}

type catalogOffering struct {
	Name             string             `json:"name"`
	Datacenter       string             `json:"datacenter"`
	Arch             string             `json:"arch"`
	CPU              resource.Quantity  `json:"cpu"`
	Memory           resource.Quantity  `json:"memory"`
	Pods             int64              `json:"pods"`
	EphemeralStorage *resource.Quantity `json:"ephemeralStorage,omitempty"`
	GPUs             int64              `json:"gpus,omitempty"`
	HourlyPrice      float64            `json:"hourlyPrice"`
}

// LoadCatalog reads an offerings catalog file.
func LoadCatalog(path string) ([]cloud.Offering, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading offerings catalog: %w", err)
	}
	return ParseCatalog(path, data)
}

// ParseCatalog decodes a catalog strictly; every problem is reported with its line.
func ParseCatalog(file string, data []byte) ([]cloud.Offering, error) {
	if len(data) > api.MaxFileSize {
		return nil, api.ErrorList{{File: file, Line: 1, Message: "the file is over 1 MiB"}}
	}
	var cf catalogFile
	pos, derrs := strictyaml.Decode(data, &cf)
	var errs api.ErrorList
	for _, e := range derrs {
		errs = append(errs, api.FileError{File: file, Line: e.Line, Field: e.Field, Message: e.Message})
	}
	if len(errs) > 0 {
		return nil, errs
	}
	add := func(path, format string, args ...any) {
		errs = append(errs, api.FileError{File: file, Line: pos.Line(path), Field: path, Message: fmt.Sprintf(format, args...)})
	}
	if cf.APIVersion != api.APIVersion {
		add("apiVersion", "must be %s", api.APIVersion)
	}
	if cf.Kind != CatalogKind {
		add("kind", "must be %s", CatalogKind)
	}
	if len(cf.Offerings) == 0 {
		add("offerings", "a catalog needs at least one offering")
	}
	seen := map[string]int{}
	out := make([]cloud.Offering, 0, len(cf.Offerings))
	for i, o := range cf.Offerings {
		p := fmt.Sprintf("offerings[%d]", i)
		if o.Name == "" {
			add(p+".name", "required")
		}
		if o.Datacenter == "" {
			add(p+".datacenter", "required")
		}
		if o.Arch != "amd64" && o.Arch != "arm64" {
			add(p+".arch", "must be amd64 or arm64, got %q", o.Arch)
		}
		if o.CPU.Sign() <= 0 {
			add(p+".cpu", "must be positive")
		}
		if o.Memory.Sign() <= 0 {
			add(p+".memory", "must be positive")
		}
		if o.Pods <= 0 {
			add(p+".pods", "must be positive")
		}
		if o.GPUs < 0 {
			add(p+".gpus", "must not be negative")
		}
		if o.HourlyPrice < 0 || math.IsNaN(o.HourlyPrice) {
			add(p+".hourlyPrice", "must not be negative")
		}
		off := cloud.Offering{Name: o.Name, Datacenter: o.Datacenter, Arch: o.Arch, CPU: o.CPU, Memory: o.Memory,
			Pods: o.Pods, GPUs: o.GPUs, HourlyPrice: o.HourlyPrice, EphemeralStorage: resource.MustParse("100Gi")}
		if o.EphemeralStorage != nil {
			off.EphemeralStorage = *o.EphemeralStorage
		}
		if first, dup := seen[off.Key()]; dup {
			add(p, "duplicate offering %s in %s (first at offerings[%d])", o.Name, o.Datacenter, first)
		}
		seen[off.Key()] = i
		out = append(out, off)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return out, nil
}
