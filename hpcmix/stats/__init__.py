"""Statistics of the mixture study: templates, the vectorised fitters (one fraction, K fractions), toys, Cramer-Rao."""

from .components import (
    ComponentTemplates,
    KDEComponents,
    PhiStarComponents,
    fit_phi_star_components,
)
from .cramer_rao import (
    FractionBound,
    cramer_rao_bound,
    fisher_information,
    fraction_cramer_rao_bound,
    fraction_fisher_information_on_grid,
)
from .ratios import DirectRatioComponents, DirectRatioTemplates, RatioComponents
from .fitter import MixtureFit, ZeroDensityWarning, fit_mixture, mixture_log_likelihood
from .fractions import FractionFit, fit_fractions, fraction_log_likelihood
from .templates import (
    AnalyticTemplates,
    KDETemplate,
    KDETemplates,
    MixtureTemplates,
    PhiStarTemplates,
    Template,
    fit_phi_star_templates,
)
from .toys import MixtureDraw, ToyDraw, draw_mixture_toys, draw_toys, toy_counts, toy_seed

__all__ = [
    "AnalyticTemplates",
    "ComponentTemplates",
    "FractionBound",
    "FractionFit",
    "MixtureDraw",
    "KDEComponents",
    "KDETemplate",
    "KDETemplates",
    "MixtureFit",
    "MixtureTemplates",
    "PhiStarComponents",
    "PhiStarTemplates",
    "DirectRatioComponents",
    "DirectRatioTemplates",
    "RatioComponents",
    "Template",
    "ToyDraw",
    "ZeroDensityWarning",
    "cramer_rao_bound",
    "draw_mixture_toys",
    "draw_toys",
    "fisher_information",
    "fit_fractions",
    "fit_mixture",
    "fit_phi_star_components",
    "fit_phi_star_templates",
    "fraction_cramer_rao_bound",
    "fraction_fisher_information_on_grid",
    "fraction_log_likelihood",
    "mixture_log_likelihood",
    "toy_counts",
    "toy_seed",
]
