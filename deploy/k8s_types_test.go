package deploy_test

// Local mirrors of the Kubernetes API types (core/v1, apps/v1,
// networking/v1) for the fields the manifests use, with the API's JSON
// names and value types. The manifests are decoded into them strictly
// (yaml.v3 KnownFields): a misspelled or misplaced field, or a value of
// the wrong type, fails the test as the API server would refuse it. This
// keeps k8s.io/api (and its large dependency tree) out of go.mod; offline
// `kubectl --dry-run=client --validate=strict` needs a server's OpenAPI.

type k8sMeta struct {
	Name        string            `yaml:"name"`
	Namespace   string            `yaml:"namespace"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

type k8sHeader struct {
	APIVersion string  `yaml:"apiVersion"`
	Kind       string  `yaml:"kind"`
	Metadata   k8sMeta `yaml:"metadata"`
}

type k8sNamespace struct {
	k8sHeader `yaml:",inline"`
}

type k8sConfigMap struct {
	k8sHeader `yaml:",inline"`
	Data      map[string]string `yaml:"data"`
}

type k8sServicePort struct {
	Name       string `yaml:"name"`
	Port       int32  `yaml:"port"`
	TargetPort string `yaml:"targetPort"` // IntOrString; the manifests use names
	Protocol   string `yaml:"protocol"`
	NodePort   int32  `yaml:"nodePort"`
}

type k8sService struct {
	k8sHeader `yaml:",inline"`
	Spec      struct {
		Type                     string            `yaml:"type"`
		ClusterIP                string            `yaml:"clusterIP"`
		ExternalTrafficPolicy    string            `yaml:"externalTrafficPolicy"`
		PublishNotReadyAddresses bool              `yaml:"publishNotReadyAddresses"`
		Selector                 map[string]string `yaml:"selector"`
		Ports                    []k8sServicePort  `yaml:"ports"`
	} `yaml:"spec"`
}

type k8sLabelSelector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
}

type k8sNetworkPolicyPort struct {
	Port     int32  `yaml:"port"`
	Protocol string `yaml:"protocol"`
}

type k8sNetworkPolicy struct {
	k8sHeader `yaml:",inline"`
	Spec      struct {
		PodSelector k8sLabelSelector `yaml:"podSelector"`
		PolicyTypes []string         `yaml:"policyTypes"`
		Ingress     []struct {
			From []struct {
				NamespaceSelector *k8sLabelSelector `yaml:"namespaceSelector"`
				PodSelector       *k8sLabelSelector `yaml:"podSelector"`
			} `yaml:"from"`
			Ports []k8sNetworkPolicyPort `yaml:"ports"`
		} `yaml:"ingress"`
	} `yaml:"spec"`
}

type k8sSeccomp struct {
	Type string `yaml:"type"`
}

type k8sProbe struct {
	Exec *struct {
		Command []string `yaml:"command"`
	} `yaml:"exec"`
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"`
	} `yaml:"httpGet"`
	InitialDelaySeconds int32 `yaml:"initialDelaySeconds"`
	PeriodSeconds       int32 `yaml:"periodSeconds"`
	TimeoutSeconds      int32 `yaml:"timeoutSeconds"`
	FailureThreshold    int32 `yaml:"failureThreshold"`
	SuccessThreshold    int32 `yaml:"successThreshold"`
}

type k8sContainer struct {
	Name            string   `yaml:"name"`
	Image           string   `yaml:"image"`
	ImagePullPolicy string   `yaml:"imagePullPolicy"`
	Args            []string `yaml:"args"`
	Env             []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			ResourceFieldRef *struct {
				ContainerName string `yaml:"containerName"`
				Resource      string `yaml:"resource"`
				Divisor       string `yaml:"divisor"`
			} `yaml:"resourceFieldRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int32  `yaml:"containerPort"`
		Protocol      string `yaml:"protocol"`
	} `yaml:"ports"`
	SecurityContext struct {
		RunAsNonRoot             bool  `yaml:"runAsNonRoot"`
		RunAsUser                int64 `yaml:"runAsUser"`
		RunAsGroup               int64 `yaml:"runAsGroup"`
		ReadOnlyRootFilesystem   bool  `yaml:"readOnlyRootFilesystem"`
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		Privileged               *bool `yaml:"privileged"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
		SeccompProfile k8sSeccomp `yaml:"seccompProfile"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
	ReadinessProbe *k8sProbe `yaml:"readinessProbe"`
	LivenessProbe  *k8sProbe `yaml:"livenessProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
}

type k8sPodSpec struct {
	AutomountServiceAccountToken  *bool `yaml:"automountServiceAccountToken"`
	EnableServiceLinks            *bool `yaml:"enableServiceLinks"`
	TerminationGracePeriodSeconds int64 `yaml:"terminationGracePeriodSeconds"`
	SecurityContext               struct {
		RunAsNonRoot        bool       `yaml:"runAsNonRoot"`
		RunAsUser           int64      `yaml:"runAsUser"`
		RunAsGroup          int64      `yaml:"runAsGroup"`
		FSGroup             int64      `yaml:"fsGroup"`
		FSGroupChangePolicy string     `yaml:"fsGroupChangePolicy"`
		SeccompProfile      k8sSeccomp `yaml:"seccompProfile"`
	} `yaml:"securityContext"`
	Containers []k8sContainer `yaml:"containers"`
	Volumes    []struct {
		Name      string `yaml:"name"`
		ConfigMap *struct {
			Name string `yaml:"name"`
		} `yaml:"configMap"`
	} `yaml:"volumes"`
}

type k8sStatefulSet struct {
	k8sHeader `yaml:",inline"`
	Spec      struct {
		ServiceName         string           `yaml:"serviceName"`
		Replicas            int32            `yaml:"replicas"`
		PodManagementPolicy string           `yaml:"podManagementPolicy"`
		Selector            k8sLabelSelector `yaml:"selector"`
		UpdateStrategy      struct {
			Type string `yaml:"type"`
		} `yaml:"updateStrategy"`
		Template struct {
			Metadata k8sMeta    `yaml:"metadata"`
			Spec     k8sPodSpec `yaml:"spec"`
		} `yaml:"template"`
		VolumeClaimTemplates []struct {
			Metadata k8sMeta `yaml:"metadata"`
			Spec     struct {
				AccessModes      []string `yaml:"accessModes"`
				StorageClassName *string  `yaml:"storageClassName"`
				Resources        struct {
					Requests map[string]string `yaml:"requests"`
				} `yaml:"resources"`
			} `yaml:"spec"`
		} `yaml:"volumeClaimTemplates"`
	} `yaml:"spec"`
}
