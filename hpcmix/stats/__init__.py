"""Statistics of the mixture study: templates, the vectorised mixture fitter, toys, Cramer-Rao."""

from .cramer_rao import cramer_rao_bound, fisher_information
from .fitter import MixtureFit, ZeroDensityWarning, fit_mixture, mixture_log_likelihood
from .templates import (
    AnalyticTemplates,
    KDETemplate,
    KDETemplates,
    MixtureTemplates,
    PhiStarTemplates,
    Template,
    fit_phi_star_templates,
)
from .toys import ToyDraw, draw_toys, toy_seed

__all__ = [
    "AnalyticTemplates",
    "KDETemplate",
    "KDETemplates",
    "MixtureFit",
    "MixtureTemplates",
    "PhiStarTemplates",
    "Template",
    "ToyDraw",
    "ZeroDensityWarning",
    "cramer_rao_bound",
    "draw_toys",
    "fisher_information",
    "fit_mixture",
    "fit_phi_star_templates",
    "mixture_log_likelihood",
    "toy_seed",
]
