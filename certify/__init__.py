"""certify: Monte Carlo certification of smoothed classifiers (Gaussian, anisotropic, full-covariance,
mixture-of-Gaussians, and Kronecker and low-rank structured noise for large inputs), plain-data
certificates, logs and certified accuracy."""

from .bounds import (
    clopper_pearson,
    clopper_pearson_lower,
    clopper_pearson_upper,
    empirical_bernstein_lower,
    hoeffding_lower,
)
from .certificate import ABSTAIN, Certificate, certificate_from_bound
from .dual import DualCertificate, DualSmooth, capped_ellipsoid, own_norm_radii
from .log import (
    COHEN_COLUMNS,
    Log,
    LogWriter,
    abstention_rate,
    average_certified_radius,
    certified_accuracy,
    cohen_markdown_table,
    read_log,
)
from .memory import (
    Memory,
    MemoryLogResult,
    MemoryResult,
    alpha_schedule,
    apply_memory_to_log,
    memory_failure_bound,
    per_certificate_alpha,
)
from .noise import DiagonalGaussian, FullGaussian, GaussianNoise, IsotropicGaussian, MixtureOfGaussians, positive_float
from .pairs import (
    ellipsoids_intersect,
    kronecker_ellipsoids_intersect,
    kronecker_separating_direction,
    max_disjoint_radius,
    separating_direction,
)
from .radius import gaussian_radius, max_sigma_radius, mixture_radius
from .region import Ellipsoid, Region
from .sampling import (
    LogitsError,
    SampleStatistics,
    model_device_dtype,
    noisy_forward,
    sample_statistics,
    sampling_dtype,
    untouched,
)
from .smooth import Smooth
from .spiked import SpikedEllipsoid, SpikedGaussian
from .structured import (
    KroneckerEllipsoid,
    KroneckerGaussian,
    LowRankEllipsoid,
    LowRankGaussian,
)

__all__ = [
    "ABSTAIN",
    "Certificate",
    "COHEN_COLUMNS",
    "DiagonalGaussian",
    "DualCertificate",
    "DualSmooth",
    "Ellipsoid",
    "FullGaussian",
    "GaussianNoise",
    "IsotropicGaussian",
    "positive_float",
    "KroneckerEllipsoid",
    "KroneckerGaussian",
    "LowRankEllipsoid",
    "LowRankGaussian",
    "Log",
    "LogWriter",
    "MixtureOfGaussians",
    "Region",
    "Smooth",
    "SpikedEllipsoid",
    "SpikedGaussian",
    "abstention_rate",
    "average_certified_radius",
    "capped_ellipsoid",
    "own_norm_radii",
    "certified_accuracy",
    "certificate_from_bound",
    "clopper_pearson",
    "clopper_pearson_lower",
    "clopper_pearson_upper",
    "cohen_markdown_table",
    "empirical_bernstein_lower",
    "gaussian_radius",
    "hoeffding_lower",
    "max_sigma_radius",
    "mixture_radius",
    "read_log",
    "Memory",
    "MemoryLogResult",
    "MemoryResult",
    "alpha_schedule",
    "apply_memory_to_log",
    "memory_failure_bound",
    "per_certificate_alpha",
    "ellipsoids_intersect",
    "kronecker_ellipsoids_intersect",
    "kronecker_separating_direction",
    "max_disjoint_radius",
    "separating_direction",
    "LogitsError",
    "SampleStatistics",
    "model_device_dtype",
    "noisy_forward",
    "sample_statistics",
    "sampling_dtype",
    "untouched",
]
