"""The report's words in English and French: section titles, column definitions, captions, reading sentences.

Decisions:

- One dictionary per language, same keys; :class:`Words` looks a key up in the report's language and
  falls back to English only for a key French lacks (a test checks that none does), so a new sentence
  can never break a report.
- Numbers follow the language's typography: English ``12,345.6``; French ``12 345,6`` with a narrow
  no-break space (U+202F) between thousands and a decimal comma, as the Imprimerie nationale's rules
  and the agency's own documents write them. Areas are in hectares, integers of 1 000 and more with
  separators; shares are percentages with one decimal.
- Column names stay the CSV's (``area_ha``, ``agreement_of_changes``) in the definitions, so a reader
  can find them in the files; the table headers show the short label in the report's language.
- The metrics keep their usual names with the remote-sensing French terms beside them: precision is the
  "précision utilisateur", recall the "précision producteur" (Congalton's user's / producer's accuracy).
"""

from __future__ import annotations

import math
from typing import Any

from deltacd.errors import InputError

LANGUAGES = ("en", "fr")

NNBSP = "\u202f"  # narrow no-break space: French thousands separator (and before ':' '%' in running text)

EN: dict[str, str] = {
    # sections
    "section.summary": "Summary",
    "section.maps": "Maps",
    "section.coregistration": "Co-registration",
    "section.histogram": "Change score and threshold",
    "section.transitions": "Areas per transition and per zone",
    "section.agreement": "Agreement with the current method",
    "section.accuracy": "Accuracy",
    "section.damage": "Damage per building",
    "section.uncertainty": "Uncertainty",
    "section.warnings": "Warnings",
    "section.details": "Run details",
    "contents": "Contents",
    # opening
    "question": "Question",
    "data": "Data",
    "method": "Method",
    "reading": "Reading of the results",
    "no_description": "The study file gives no description (key description).",
    "written_by": "Report written by deltacd {version} on {stamp}.",
    "webmap": "Interactive map",
    "data.images": "Images: {before} (before, {date_before}) and {after} (after, {date_after}).",
    "data.sensor": "Sensor: {sensor}.",
    "data.grid": "Analysis grid: {width} × {height} pixels of {res} m, {crs}; {area} ha analysed.",
    "data.bands": "Bands used: {bands}.",
    "data.landcover": "Land-cover maps (the current method's input): {before} and {after}.",
    "data.current_change": "The current method's change layer: {layer}.",
    "data.reference": "Reference for the accuracy: {reference}.",
    "data.zones": "Zones: {zones} (field {field}).",
    "data.buildings": "Building footprints: {buildings}.",
    "data.damage_reference": "Reference damage study: {reference} (field {field}).",
    "date.unknown": "date not given",
    "files": "{n} files in {folder}",
    "method.detect": "Change detection with deltacd's {name} method ({units}); a pixel is changed where its score is at "
                     "least {threshold} (rule: {rule}); changed pixels are grouped into polygons{mmu}.",
    "method.mmu": " of at least {area} m²",
    "method.coreg": " The after image was co-registered on the before image first (residual shift {shift} m).",
    "method.damage": "Damage per building with deltacd's {name} method: each building footprint gets a damage grade "
                     "from the change inside it and around it.",
    "method.compare": "The current method (post-classification comparison) is reproduced: the two land-cover maps are "
                      "compared class by class; deltacd's changes are set against its changes, per zone and per transition.",
    "method.evaluate": "The change map is scored against the reference pixel by pixel, with 95 % confidence intervals "
                       "from a block bootstrap ({n_boot} resamplings).",
    "method.evaluate_damage": "The grades are compared with the reference damage study building by building "
                              "(join: {join}), with 95 % confidence intervals from a spatial bootstrap.",
    # readings
    "read.changes": "deltacd maps {area} ha of change ({share} of the valid area) in {polygons} polygons.",
    "read.f1": "Against the reference, the F1 score of the changes is {f1} (95 % CI {low} to {high}); precision {p}, "
               "recall {r}.",
    "read.f1.low": "An F1 under 0.3 means that most detected changes are not confirmed by the reference, or most real "
                   "changes are missed: the map is not usable without a review by an analyst.",
    "read.f1.mid": "An F1 between 0.3 and 0.6 means a useful first pass that still needs an analyst's review.",
    "read.f1.high": "An F1 of 0.6 and more means that the map agrees well with the reference.",
    "read.precision.low": "Precision {p}: of 100 ha mapped as change, about {n} ha are confirmed by the reference; the "
                          "others are false alarms (seasonal vegetation, shadows, image differences).",
    "read.recall.low": "Recall {r}: about {n} % of the reference's changes are found; the others are missed.",
    "read.kappa": "Kappa {kappa}: {meaning}.",
    "read.kappa.poor": "agreement barely better than chance; the result must not be used as it is",
    "read.kappa.weak": "weak agreement (kappa under 0.4): the map shows the trend, not each change",
    "read.kappa.moderate": "moderate agreement (0.4 to 0.6)",
    "read.kappa.good": "good agreement (0.6 and more)",
    "read.agreement": "deltacd and the current method agree on {both} ha of change; {only_ours} ha are changed only "
                      "for deltacd and {only_current} ha only for the current method (agreement of the changes "
                      "{agreement}).",
    "read.agreement.low": "Under 0.3 the two methods mostly map different changes: look at the maps before relying "
                          "on either.",
    "read.landcover": "The current method (the two land-cover maps compared class by class) changes {area} ha.",
    "read.damage": "{buildings} buildings graded: {grades}.",
    "read.damage_eval": "Against the reference damage study, damaged-vs-undamaged F1 {f1} (95 % CI {low} to {high}); "
                        "weighted kappa {kappa}.",
    "read.warnings": "{n} warnings were raised during the run; see the section Warnings.",
    "read.none": "No step with results ran.",
    "read.ci_wide": "The confidence interval is wide ({low} to {high}): the reference is too small to measure the "
                    "accuracy precisely.",
    # tables and captions
    "definitions": "Columns",
    "more_rows": "{n} more rows in the file {file}.",
    "nothing": "nothing to show",
    "total": "total",
    "from_to": "from \\ to",
    "matrix.note": "Rows: class at date 1 (from); columns: class at date 2 (to); in ha. Shaded: {diagonal}.",
    "matrix.all": "{caption}, all zones",
    "ours_matrix": "deltacd's changes by from/to class (ha)",
    "lc_matrix": "The land-cover maps' from/to matrix: the current method (ha)",
    "within_class": "changes within a class",
    "unchanged": "unchanged",
    "cap.changes_map": "deltacd's changes over the after image.",
    "cap.images": "The before and after images, on the same grid.",
    "cap.landcover": "Land cover of each date (the current method's input), at reduced resolution.",
    "cap.compared": "Where deltacd's changes and the current method's agree.",
    "cap.compared_ours": "deltacd's changes by kind: a change of class, or a change within a class.",
    "cap.compared_pcc": "The current method's changes (post-classification), by transition.",
    "cap.coreg": "Shift measured in each block (arrows magnified).",
    "cap.histogram": "Score histogram and threshold.",
    "cap.uncertainty": "Where the network is unsure (predictive entropy over test-time augmentation).",
    "cap.damage_map": "Buildings by damage grade over the post-event image.",
    "cap.damage_counts": "Buildings per grade.",
    "cap.transitions": "Areas per transition (changes within a class apart).",
    "cap.transitions_pcc": "Areas per transition of the land-cover maps (the current method's changes).",
    "cap.within": "Changes within a class: the class is the same at both dates.",
    "cap.agreement_zones": "Agreement with the current method per zone.",
    "cap.agreement_transitions": "Agreement with the current method per transition.",
    "cap.damage_compared": "The reference study's grade and deltacd's, per building.",
    "cap.damage_agreement": "Agreement of deltacd's grade with the reference study's, per building (agreement.gpkg).",
    "cap.accuracy": "Accuracy figure: {name}.",
    "fig.file": "file",
    "kinds": "Of deltacd's {polygons} change polygons ({area} ha), {t_polygons} ({t_area} ha) change class between the "
             "two land-cover maps (transitions) and {w_polygons} ({w_area} ha) keep their class: changes within a class "
             "(a new roof on a roof, a crop after a crop), {counted} (setting within_class: {setting}){unknown}.",
    "kinds.apart": "counted apart, not as land-cover change",
    "kinds.change": "counted as change",
    "kinds.some": "counted as change for {classes} only",
    "kinds.unknown": "; {n} lie outside the land-cover maps",
    "pcc": "The current method (the land-cover maps compared class by class) changes {area} ha, in {polygons} polygons "
           "(post_classification_changes.gpkg, layer changes).",
    "no_detect_agreement": "No detect step: the land-cover maps are compared with each other only.",
    "damage.against": "Against the reference study: damaged-vs-undamaged F1 {f1}{ci}, weighted kappa {kappa}, {graded} "
                      "buildings graded in both ({matched} matched, {only_ours} only in ours, {only_reference} only in "
                      "the reference; join: {join}).",
    "ci": " (95 % CI {low} to {high})",
    "confusion.caption": "Confusion matrix of grades (buildings graded in both)",
    "confusion.corner": "reference \\ deltacd",
    "confusion.note": "Rows: the reference study's grade; columns: deltacd's; shaded: the same grade.",
    "per_zone": "Buildings per zone and grade: deltacd / the reference study.",
    "warnings.intro": "Warnings raised by deltacd during the run (the complete log is deltacd.log in each step's folder).",
    "coreg.unreliable": "{step}: co-registration unreliable ({used} of {measured} blocks agree)",
    "half_changed": "detect: more than half of the valid pixels are flagged as changed",
    "credit": "Images: {credit}",
    "print.links": "Files",
}

FR: dict[str, str] = {
    "section.summary": "Résumé",
    "section.maps": "Cartes",
    "section.coregistration": "Recalage des images",
    "section.histogram": "Score de changement et seuil",
    "section.transitions": "Surfaces par transition et par zone",
    "section.agreement": "Accord avec la méthode actuelle",
    "section.accuracy": "Précision",
    "section.damage": "Dommages par bâtiment",
    "section.uncertainty": "Incertitude",
    "section.warnings": "Avertissements",
    "section.details": "Détails techniques",
    "contents": "Sommaire",
    "question": "Question posée",
    "data": "Données",
    "method": "Méthode",
    "reading": "Lecture des résultats",
    "no_description": "Le fichier d'étude ne donne pas de description (clé description).",
    "written_by": "Rapport rédigé par deltacd {version} le {stamp}.",
    "webmap": "Carte interactive",
    "data.images": "Images : {before} (avant, {date_before}) et {after} (après, {date_after}).",
    "data.sensor": "Capteur : {sensor}.",
    "data.grid": "Grille d'analyse : {width} × {height} pixels de {res} m, {crs} ; {area} ha analysés.",
    "data.bands": "Bandes utilisées : {bands}.",
    "data.landcover": "Cartes d'occupation du sol (entrée de la méthode actuelle) : {before} et {after}.",
    "data.current_change": "Couche de changements de la méthode actuelle : {layer}.",
    "data.reference": "Référence pour la précision : {reference}.",
    "data.zones": "Zones : {zones} (champ {field}).",
    "data.buildings": "Emprises des bâtiments : {buildings}.",
    "data.damage_reference": "Étude de dommages de référence : {reference} (champ {field}).",
    "date.unknown": "date non renseignée",
    "files": "{n} fichiers dans {folder}",
    "method.detect": "Détection des changements par la méthode {name} de deltacd ({units}) ; un pixel est changé si son "
                     "score atteint {threshold} (règle : {rule}) ; les pixels changés sont regroupés en polygones{mmu}.",
    "method.mmu": " d'au moins {area} m²",
    "method.coreg": " L'image après a d'abord été recalée sur l'image avant (décalage résiduel {shift} m).",
    "method.damage": "Dommages par bâtiment selon la méthode {name} de deltacd : chaque emprise de bâtiment reçoit un "
                     "degré de dommage d'après le changement en son sein et autour.",
    "method.compare": "La méthode actuelle (comparaison post-classification) est reproduite : les deux cartes "
                      "d'occupation du sol sont comparées classe par classe ; les changements de deltacd sont confrontés "
                      "aux siens, par zone et par transition.",
    "method.evaluate": "La carte des changements est comparée pixel à pixel à la référence, avec des intervalles de "
                       "confiance à 95 % obtenus par bootstrap par blocs ({n_boot} tirages).",
    "method.evaluate_damage": "Les degrés de dommage sont comparés bâtiment par bâtiment à l'étude de référence "
                              "(appariement : {join}), avec des intervalles de confiance à 95 % par bootstrap spatial.",
    "read.changes": "deltacd cartographie {area} ha de changements ({share} de la surface valide) en {polygons} polygones.",
    "read.f1": "Par rapport à la référence, le score F1 des changements est de {f1} (IC 95 % de {low} à {high}) ; "
               "précision utilisateur {p}, précision producteur (rappel) {r}.",
    "read.f1.low": "Un F1 inférieur à 0,3 signifie que la plupart des changements détectés ne sont pas confirmés par la "
                   "référence, ou que la plupart des changements réels sont manqués : la carte n'est pas utilisable sans "
                   "vérification par un photo-interprète.",
    "read.f1.mid": "Un F1 entre 0,3 et 0,6 correspond à un premier tri utile, qui demande encore une vérification par un "
                   "photo-interprète.",
    "read.f1.high": "Un F1 de 0,6 ou plus signifie que la carte est en bon accord avec la référence.",
    "read.precision.low": "Précision utilisateur {p} : sur 100 ha cartographiés comme changés, environ {n} ha sont "
                          "confirmés par la référence ; les autres sont de fausses alarmes (végétation saisonnière, "
                          "ombres, différences entre les images).",
    "read.recall.low": "Précision producteur {r} : environ {n} % des changements de la référence sont trouvés ; les "
                       "autres sont manqués.",
    "read.kappa": "Kappa {kappa} : {meaning}.",
    "read.kappa.poor": "accord à peine meilleur que le hasard ; le résultat ne doit pas être utilisé tel quel",
    "read.kappa.weak": "accord faible (kappa inférieur à 0,4) : la carte montre la tendance, pas chaque changement",
    "read.kappa.moderate": "accord modéré (de 0,4 à 0,6)",
    "read.kappa.good": "bon accord (0,6 et plus)",
    "read.agreement": "deltacd et la méthode actuelle s'accordent sur {both} ha de changements ; {only_ours} ha ne sont "
                      "changés que pour deltacd et {only_current} ha que pour la méthode actuelle (accord des "
                      "changements {agreement}).",
    "read.agreement.low": "En dessous de 0,3, les deux méthodes cartographient surtout des changements différents : "
                          "regarder les cartes avant de s'appuyer sur l'une ou l'autre.",
    "read.landcover": "La méthode actuelle (les deux cartes d'occupation du sol comparées classe par classe) change {area} ha.",
    "read.damage": "{buildings} bâtiments classés : {grades}.",
    "read.damage_eval": "Par rapport à l'étude de référence, F1 endommagé / non endommagé {f1} (IC 95 % de {low} à "
                        "{high}) ; kappa pondéré {kappa}.",
    "read.warnings": "{n} avertissements ont été émis pendant le traitement ; voir la section Avertissements.",
    "read.none": "Aucune étape produisant des résultats n'a été exécutée.",
    "read.ci_wide": "L'intervalle de confiance est large ({low} à {high}) : la référence est trop petite pour mesurer la "
                    "précision finement.",
    "definitions": "Colonnes",
    "more_rows": "{n} lignes de plus dans le fichier {file}.",
    "nothing": "rien à afficher",
    "total": "total",
    "from_to": "de \\ vers",
    "matrix.note": "Lignes : classe à la date 1 (de) ; colonnes : classe à la date 2 (vers) ; en ha. Grisé : {diagonal}.",
    "matrix.all": "{caption}, toutes zones",
    "ours_matrix": "Changements de deltacd par classe de départ et d'arrivée (ha)",
    "lc_matrix": "Matrice de transition des cartes d'occupation du sol : la méthode actuelle (ha)",
    "within_class": "changements au sein d'une classe",
    "unchanged": "inchangé",
    "cap.changes_map": "Changements de deltacd sur l'image après.",
    "cap.images": "Images avant et après, sur la même grille.",
    "cap.landcover": "Occupation du sol à chaque date (entrée de la méthode actuelle), à résolution réduite.",
    "cap.compared": "Accord entre les changements de deltacd et ceux de la méthode actuelle.",
    "cap.compared_ours": "Changements de deltacd par nature : changement de classe, ou changement au sein d'une classe.",
    "cap.compared_pcc": "Changements de la méthode actuelle (post-classification), par transition.",
    "cap.coreg": "Décalage mesuré dans chaque bloc (flèches agrandies).",
    "cap.histogram": "Histogramme du score et seuil.",
    "cap.uncertainty": "Là où le réseau hésite (entropie prédictive sur les augmentations au test).",
    "cap.damage_map": "Bâtiments par degré de dommage sur l'image post-événement.",
    "cap.damage_counts": "Bâtiments par degré.",
    "cap.transitions": "Surfaces par transition (changements au sein d'une classe à part).",
    "cap.transitions_pcc": "Surfaces par transition des cartes d'occupation du sol (changements de la méthode actuelle).",
    "cap.within": "Changements au sein d'une classe : la classe est la même aux deux dates.",
    "cap.agreement_zones": "Accord avec la méthode actuelle par zone.",
    "cap.agreement_transitions": "Accord avec la méthode actuelle par transition.",
    "cap.damage_compared": "Degré de l'étude de référence et degré de deltacd, par bâtiment.",
    "cap.damage_agreement": "Accord du degré de deltacd avec celui de l'étude de référence, par bâtiment (agreement.gpkg).",
    "cap.accuracy": "Figure de précision : {name}.",
    "fig.file": "fichier",
    "kinds": "Sur les {polygons} polygones de changement de deltacd ({area} ha), {t_polygons} ({t_area} ha) changent de "
             "classe entre les deux cartes d'occupation du sol (transitions) et {w_polygons} ({w_area} ha) gardent leur "
             "classe : changements au sein d'une classe (un toit refait, une culture après une culture), {counted} "
             "(réglage within_class : {setting}){unknown}.",
    "kinds.apart": "comptés à part, pas comme changement d'occupation du sol",
    "kinds.change": "comptés comme changements",
    "kinds.some": "comptés comme changements pour {classes} seulement",
    "kinds.unknown": " ; {n} sont hors des cartes d'occupation du sol",
    "pcc": "La méthode actuelle (les cartes d'occupation du sol comparées classe par classe) change {area} ha, en "
           "{polygons} polygones (post_classification_changes.gpkg, couche changes).",
    "no_detect_agreement": "Pas d'étape detect : les cartes d'occupation du sol sont seulement comparées entre elles.",
    "damage.against": "Par rapport à l'étude de référence : F1 endommagé / non endommagé {f1}{ci}, kappa pondéré {kappa}, "
                      "{graded} bâtiments classés dans les deux ({matched} appariés, {only_ours} seulement chez deltacd, "
                      "{only_reference} seulement dans la référence ; appariement : {join}).",
    "ci": " (IC 95 % de {low} à {high})",
    "confusion.caption": "Matrice de confusion des degrés (bâtiments classés dans les deux)",
    "confusion.corner": "référence \\ deltacd",
    "confusion.note": "Lignes : degré de l'étude de référence ; colonnes : degré de deltacd ; grisé : même degré.",
    "per_zone": "Bâtiments par zone et par degré : deltacd / étude de référence.",
    "warnings.intro": "Avertissements émis par deltacd pendant le traitement (le journal complet est deltacd.log dans le "
                      "dossier de chaque étape).",
    "coreg.unreliable": "{step} : recalage peu fiable ({used} blocs sur {measured} concordent)",
    "half_changed": "detect : plus de la moitié des pixels valides sont marqués comme changés",
    "credit": "Images : {credit}",
    "print.links": "Fichiers",
}

#: Column label and definition, per language: (short header, what the column holds).
COLUMNS: dict[str, dict[str, tuple[str, str]]] = {
    "en": {
        "zone": ("zone", "the zone (the study's zones); all: the whole area"),
        "transition": ("transition", "class at date 1 -> class at date 2 (land-cover maps)"),
        "from_class": ("from", "land-cover class at date 1"),
        "to_class": ("to", "land-cover class at date 2"),
        "change_kind": ("kind", "transition: the class changes between the two maps; within class: the class is the "
                                "same at both dates; unknown: outside the land-cover maps"),
        "counts_as_change": ("counts as change", "True when the polygon counts as a land-cover change (setting within_class)"),
        "polygons": ("polygons", "number of deltacd's change polygons"),
        "area_ha": ("area (ha)", "area in hectares (1 ha = 10,000 m²)"),
        "neither_ha": ("neither (ha)", "area changed for neither method: stable for both (ha)"),
        "only_ours_ha": ("only deltacd (ha)", "area changed for deltacd only (ha)"),
        "only_current_ha": ("only current (ha)", "area changed for the current method only (ha)"),
        "both_ha": ("both (ha)", "area changed for both methods (ha)"),
        "ours_ha": ("deltacd (ha)", "area changed for deltacd: only deltacd + both (ha)"),
        "current_ha": ("current (ha)", "area changed for the current method: only current + both (ha)"),
        "agreement_of_changes": ("agreement", "both / (only deltacd + only current + both): the share of the area "
                                              "changed for either method that is changed for both (0 none, 1 the same "
                                              "changes); stable land is left out, so it cannot inflate the score"),
        "damage_label": ("grade", "damage grade given by deltacd"),
        "damage_grade": ("grade code", "damage grade code (0 no damage to 3 destroyed)"),
        "buildings": ("buildings", "number of buildings"),
        "footprint_area_m2": ("footprint (m²)", "total footprint area of these buildings (m²)"),
        "grade": ("grade", "damage grade"),
        "reference_buildings": ("reference", "buildings of this grade in the reference study"),
        "our_buildings": ("deltacd", "buildings of this grade for deltacd"),
        "precision": ("precision", "of deltacd's buildings of this grade, the share the reference grades the same "
                                   "(user's accuracy)"),
        "recall": ("recall", "of the reference's buildings of this grade, the share deltacd grades the same (producer's "
                             "accuracy)"),
        "f1": ("F1", "harmonic mean of precision and recall (0 to 1)"),
        "f1_ci_low": ("F1 CI low", "lower bound of F1's 95 % confidence interval"),
        "f1_ci_high": ("F1 CI high", "upper bound of F1's 95 % confidence interval"),
        "score": ("score", "the accuracy measure"),
        "value": ("value", "its value over the whole reference (0 to 1)"),
        "ci": ("95 % CI", "95 % confidence interval (block bootstrap): the value lies in it 19 times out of 20"),
        "meaning": ("meaning", "what the measure says"),
        "item": ("item", "what is described"),
        "detail": ("detail", "as the run recorded it (run.json, the step records): files, settings, times"),
    },
    "fr": {
        "zone": ("zone", "zone de l'étude ; all : toute la surface"),
        "transition": ("transition", "classe à la date 1 -> classe à la date 2 (cartes d'occupation du sol)"),
        "from_class": ("de", "classe d'occupation du sol à la date 1"),
        "to_class": ("vers", "classe d'occupation du sol à la date 2"),
        "change_kind": ("nature", "transition : la classe change entre les deux cartes ; within class : même classe aux "
                                  "deux dates ; unknown : hors des cartes d'occupation du sol"),
        "counts_as_change": ("compté", "True si le polygone compte comme changement d'occupation du sol (réglage "
                                       "within_class)"),
        "polygons": ("polygones", "nombre de polygones de changement de deltacd"),
        "area_ha": ("surface (ha)", f"surface en hectares (1 ha = 10{NNBSP}000 m²)"),
        "neither_ha": ("aucune (ha)", "surface changée pour aucune des deux méthodes : stable pour les deux (ha)"),
        "only_ours_ha": ("deltacd seul (ha)", "surface changée pour deltacd seulement (ha)"),
        "only_current_ha": ("actuelle seule (ha)", "surface changée pour la méthode actuelle seulement (ha)"),
        "both_ha": ("les deux (ha)", "surface changée pour les deux méthodes (ha)"),
        "ours_ha": ("deltacd (ha)", "surface changée pour deltacd : deltacd seul + les deux (ha)"),
        "current_ha": ("actuelle (ha)", "surface changée pour la méthode actuelle : actuelle seule + les deux (ha)"),
        "agreement_of_changes": ("accord", "les deux / (deltacd seul + actuelle seule + les deux) : part de la surface "
                                           "changée pour au moins une méthode qui l'est pour les deux (0 aucun accord, "
                                           "1 mêmes changements) ; les surfaces stables sont exclues pour ne pas gonfler "
                                           "le score"),
        "damage_label": ("degré", "degré de dommage attribué par deltacd"),
        "damage_grade": ("code", "code du degré de dommage (0 sans dommage à 3 détruit)"),
        "buildings": ("bâtiments", "nombre de bâtiments"),
        "footprint_area_m2": ("emprise (m²)", "surface totale des emprises de ces bâtiments (m²)"),
        "grade": ("degré", "degré de dommage"),
        "reference_buildings": ("référence", "bâtiments de ce degré dans l'étude de référence"),
        "our_buildings": ("deltacd", "bâtiments de ce degré pour deltacd"),
        "precision": ("précision", "parmi les bâtiments de ce degré pour deltacd, part classée de même par la référence "
                                   "(précision utilisateur)"),
        "recall": ("rappel", "parmi les bâtiments de ce degré dans la référence, part classée de même par deltacd "
                             "(précision producteur)"),
        "f1": ("F1", "moyenne harmonique de la précision et du rappel (0 à 1)"),
        "f1_ci_low": ("F1 IC bas", "borne basse de l'intervalle de confiance à 95 % du F1"),
        "f1_ci_high": ("F1 IC haut", "borne haute de l'intervalle de confiance à 95 % du F1"),
        "score": ("mesure", "la mesure de précision"),
        "value": ("valeur", "sa valeur sur toute la référence (0 à 1)"),
        "ci": ("IC 95 %", "intervalle de confiance à 95 % (bootstrap par blocs) : la valeur s'y trouve 19 fois sur 20"),
        "meaning": ("signification", "ce que dit la mesure"),
        "item": ("élément", "ce qui est décrit"),
        "detail": ("détail", "tel que le traitement l'a enregistré (run.json, les fiches des étapes) : fichiers, réglages, durées"),
    },
}

#: What each accuracy measure says, per language.
METRICS: dict[str, dict[str, tuple[str, str]]] = {
    "en": {
        "f1": ("F1", "balance of precision and recall; 1 is a perfect map"),
        "precision": ("precision (user's accuracy)", "share of the area mapped as change that is change in the reference"),
        "recall": ("recall (producer's accuracy)", "share of the reference's change that the map finds"),
        "iou": ("IoU", "overlap of mapped and reference change: intersection / union"),
        "kappa": ("kappa", "agreement corrected for chance: 0 chance, 1 perfect; under 0.4 weak"),
        "overall_accuracy": ("overall accuracy", "share of all pixels (change and no change) classed right; high "
                                                 "whenever change is rare, so read F1 first"),
        "macro_f1": ("macro F1", "mean of the F1 of change and of no change"),
    },
    "fr": {
        "f1": ("F1", "équilibre entre précision utilisateur et producteur ; 1 pour une carte parfaite"),
        "precision": ("précision utilisateur", "part de la surface cartographiée comme changée qui l'est dans la référence"),
        "recall": ("précision producteur (rappel)", "part des changements de la référence que la carte trouve"),
        "iou": ("IoU", "recouvrement des changements cartographiés et de référence : intersection / union"),
        "kappa": ("kappa", "accord corrigé du hasard : 0 hasard, 1 parfait ; faible sous 0,4"),
        "overall_accuracy": ("précision globale", "part de tous les pixels (changés ou non) bien classés ; élevée dès que "
                                                  "les changements sont rares, lire d'abord le F1"),
        "macro_f1": ("F1 macro", "moyenne des F1 des classes changement et non-changement"),
    },
}

TEXTS = {"en": EN, "fr": FR}


def check_language(value: Any, where: str = "language") -> str:
    """``value`` when it is one of :data:`LANGUAGES`, else an :class:`InputError` naming ``where`` and the choices."""
    if value not in LANGUAGES:
        raise InputError(f"{where}: {value!r} is not a report language; use one of {', '.join(LANGUAGES)}")
    return value


class Words:
    """The report's texts and number formats in one language (module notes)."""

    def __init__(self, language: str = "en"):
        self.language = check_language(language)
        self.texts = TEXTS[language]

    def __call__(self, key: str, **values: Any) -> str:
        text = self.texts.get(key, EN[key])
        return self._typography(text.format(**values) if values else text)

    def _typography(self, text: str) -> str:
        """French spacing: a no-break space before ':' and narrow no-break spaces before ';' and '%', so that a line
        never starts with them."""
        if self.language != "fr":
            return text
        return text.replace(" :", "\u00a0:").replace(" ;", f"{NNBSP};").replace(" %", f"{NNBSP}%")

    def column(self, name: str) -> tuple[str, str] | None:
        """(header, definition) of a table column, or None for one with no definition (a grade name, a zone)."""
        found = COLUMNS[self.language].get(name) or COLUMNS["en"].get(name)
        return (self._typography(found[0]), self._typography(found[1])) if found else None

    def metric(self, name: str) -> tuple[str, str]:
        found = METRICS[self.language].get(name) or METRICS["en"].get(name) or (name, "")
        return self._typography(found[0]), self._typography(found[1])

    # numbers --------------------------------------------------------------------------------
    def _local(self, text: str) -> str:
        if self.language == "fr":
            return text.replace(",", NNBSP).replace(".", ",")
        return text

    def number(self, value: Any, digits: int = 3) -> str:
        """A measure (F1, kappa, a share): ``digits`` significant digits under 1 000, else an integer with separators."""
        if value is None:
            return "–"
        number = float(value)
        if math.isnan(number):
            return "–"
        if abs(number) >= 1000:
            return self.integer(number)
        return self._local(f"{number:.{digits}g}") if number else "0"

    def integer(self, value: Any) -> str:
        return self._local(f"{round(float(value)):,}")

    def ha(self, value: Any) -> str:
        """Hectares: two decimals under 1 000 ha, whole hectares with thousands separators above."""
        number = float(value or 0)
        return self._local(f"{number:,.2f}" if abs(number) < 1000 else f"{number:,.0f}")

    def percent(self, share: Any, digits: int = 1) -> str:
        """A share (0..1) as a percentage; French puts a narrow no-break space before %."""
        text = self._local(f"{100 * float(share or 0):.{digits}f}")
        return f"{text}{NNBSP}%" if self.language == "fr" else f"{text} %"

    def cell(self, value: Any) -> str:
        """A table cell from a CSV: integers with separators, decimals to 4 significant digits, text as it is."""
        if value is None or isinstance(value, bool):
            return "" if value is None else str(value)
        try:
            number = float(value)
        except (TypeError, ValueError):
            return str(value)
        if math.isnan(number):
            return "–"
        if (isinstance(value, int) or (isinstance(value, str) and "." not in value and "e" not in value.lower())) \
                and number.is_integer():
            return self.integer(number)
        if abs(number) >= 1000:
            return self.integer(number)
        return self._local(f"{number:.4g}")


#: The maps' labels in French, by their English text (maps.py draws in English and translates through this).
MAP_FR: dict[str, str] = {
    "before": "avant",
    "after": "après",
    "change": "changement",
    "changes ({n} polygons)": "changements ({n} polygones)",
    "land cover {label}": "occupation du sol {label}",
    "current method: post-classification changes ({n} polygons)":
        "méthode actuelle : changements post-classification ({n} polygones)",
    "deltacd: changes ({n} polygons)": "deltacd : changements ({n} polygones)",
    "agreement of the changes": "accord des changements",
    "damage per building": "dommages par bâtiment",
    "post-event image {date}": "image post-événement {date}",
    "reference study's grade ({n} buildings)": "degré de l'étude de référence ({n} bâtiments)",
    "deltacd's grade ({n} buildings)": "degré de deltacd ({n} bâtiments)",
    "agreement per building": "accord par bâtiment",
    "{n} other transitions ({area})": "{n} autres transitions ({area})",
    "{label}: {n} polygons, {area}": "{label} : {n} polygones, {area}",
    "Legend": "Légende",
    "Location (lon/lat, WGS 84)": "Localisation (lon/lat, WGS 84)",
    "coordinates in metres, {crs}": "coordonnées en mètres, {crs}",
    "coordinates in degrees, {crs}": "coordonnées en degrés, {crs}",
    "Images: {credit}": "Images : {credit}",
    "transition": "transition (changement de classe)",
    "within a class, counted as change": "au sein d'une classe, compté comme changement",
    "within a class (counted apart)": "au sein d'une classe (compté à part)",
    "outside the land-cover maps": "hors des cartes d'occupation du sol",
    "only deltacd": "deltacd seul",
    "only the current method": "méthode actuelle seule",
    "both": "les deux",
    "same grade": "même degré",
    "ours more severe": "deltacd plus sévère",
    "ours less severe": "deltacd moins sévère",
    "only ours": "seulement deltacd",
    "only reference": "seulement la référence",
    "unclassified": "non classé",
    "no damage": "sans dommage",
    "minor": "mineur",
    "major": "majeur",
    "destroyed": "détruit",
    "change area (ha)": "surface changée (ha)",
    "change score over the scene": "score de changement sur la scène",
    "pixels": "pixels",
    "threshold {value} ({rule})": "seuil {value} ({rule})",
    "footprint of the images": "emprise des images",
    "agrees (used)": "concordant (utilisé)",
    "left out": "écarté",
    "{label}: {n} blocks": "{label} : {n} blocs",
    "column (px)": "colonne (px)",
    "row (px)": "ligne (px)",
    "corrected": "corrigé",
    "measured, not corrected": "mesuré, non corrigé",
    "residual shift dx {dx} px, dy {dy} px ({m} m), {state}": "décalage résiduel dx {dx} px, dy {dy} px ({m} m), {state}",
}


def map_text(text: str, language: str, **values: Any) -> str:
    """A map label in ``language`` (its English text looked up in :data:`MAP_FR`), with ``values`` filled in."""
    chosen = MAP_FR.get(text, text) if language == "fr" else text
    return chosen.format(**values) if values else chosen


#: The web map's texts (:mod:`deltacd.report.webmap`), by language.
WEBMAP = {
    "en": {"before": "before", "after": "after", "swipe": "swipe before | after", "swipeHint": "drag to compare",
           "yes": "yes", "no": "no", "image_before": "Image before", "image_after": "Image after",
           "landcover_before": "Land cover before", "landcover_after": "Land cover after", "landcover": "Land cover",
           "uncertainty": "Uncertainty (entropy)", "pcc": "Changes: current method (land-cover maps compared)",
           "ours": "Changes: deltacd", "transitions": "Transitions",
           "within": "dashed outline: change within a class, counted apart",
           "agreement": "Agreement: both / only deltacd / only the current method",
           "agreement_title": "Agreement of the changes", "zones": "Zones", "aoi": "Area of interest",
           "outlines": "Outlines", "ours_grade": "Damage grade of buildings (deltacd)",
           "reference_grade": "Damage grade of buildings (reference)", "grades": "Damage grade",
           "grade_agreement": "Agreement of grades of buildings (deltacd vs reference)",
           "grade_agreement_title": "Agreement of grades", "changes": "change", "first": "largest first",
           "top": "the {n} largest of {total}; all in the GeoPackage"},
    "fr": {"before": "avant", "after": "après", "swipe": "rideau avant | après", "swipeHint": "glisser pour comparer",
           "yes": "oui", "no": "non", "image_before": "Image avant", "image_after": "Image après",
           "landcover_before": "Occupation du sol avant", "landcover_after": "Occupation du sol après",
           "landcover": "Occupation du sol", "uncertainty": "Incertitude (entropie)",
           "pcc": "Changements : méthode actuelle (cartes d'occupation du sol comparées)",
           "ours": "Changements : deltacd", "transitions": "Transitions",
           "within": "contour en tirets : changement au sein d'une classe, compté à part",
           "agreement": "Accord : les deux / deltacd seul / méthode actuelle seule",
           "agreement_title": "Accord des changements", "zones": "Zones", "aoi": "Zone d'étude",
           "outlines": "Contours", "ours_grade": "Degré de dommage des bâtiments (deltacd)",
           "reference_grade": "Degré de dommage des bâtiments (référence)", "grades": "Degré de dommage",
           "grade_agreement": "Accord des degrés des bâtiments (deltacd / référence)",
           "grade_agreement_title": "Accord des degrés", "changes": "changement", "first": "les plus grands d'abord",
           "top": "les {n} plus grands sur {total} ; tous dans le GeoPackage"},
}
