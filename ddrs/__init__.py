"""ddrs: per-input optimisation of the smoothing noise (sigma: DDRS, Theta: ANCER, C: RDDRS) with
pluggable objectives and swappable metric / optimiser."""

from manifolds.eigenframe import EigenFrame

from .dual_dictionary import (
    InputLabels,
    KMeansResult,
    ModelFeatureSelector,
    NoiseDictionary,
    RiemannianKMeans,
    frechet_mean,
    label_inputs,
    selector_mlp,
    train_selector,
)
from .estimator import PROBABILITY_CLAMP, NetworkCounter, SoftSmoothingEstimator, Terms, gap_from_probabilities
from .methods import ANCER, DDRS, RDDRS, RS, SmoothingResult, certify_inputs, run_chain
from .objectives import (
    FORMS,
    EigenvalueFloor,
    KappaPenalty,
    KeepBall,
    Objective,
    Radius,
    Sum,
    VolumeProxy,
    ancer_objective,
    paper_objective,
)
from .optimizers import (
    AdamAscent,
    EuclideanAscent,
    RiemannianAdam,
    RiemannianAscent,
    Stepper,
    StepRule,
    StepState,
    Trace,
    ascend,
    sample_schedule,
)
from .problem import Problem
from .pymanopt_ascent import pymanopt_ascend
from .selection import hard_vote_radii, select

__all__ = [
    "ANCER",
    "AdamAscent",
    "FORMS",
    "DDRS",
    "EigenFrame",
    "EigenvalueFloor",
    "EuclideanAscent",
    "InputLabels",
    "KMeansResult",
    "ModelFeatureSelector",
    "KappaPenalty",
    "KeepBall",
    "NetworkCounter",
    "NoiseDictionary",
    "Objective",
    "PROBABILITY_CLAMP",
    "Problem",
    "RDDRS",
    "RS",
    "Radius",
    "RiemannianAdam",
    "RiemannianAscent",
    "RiemannianKMeans",
    "SmoothingResult",
    "SoftSmoothingEstimator",
    "StepRule",
    "StepState",
    "Stepper",
    "Sum",
    "Terms",
    "Trace",
    "VolumeProxy",
    "ancer_objective",
    "ascend",
    "certify_inputs",
    "frechet_mean",
    "gap_from_probabilities",
    "hard_vote_radii",
    "label_inputs",
    "paper_objective",
    "pymanopt_ascend",
    "run_chain",
    "sample_schedule",
    "select",
    "selector_mlp",
    "train_selector",
]
